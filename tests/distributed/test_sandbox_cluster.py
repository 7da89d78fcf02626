"""`mailconnector sandbox --background --with-cluster` as a newcomer runs it: the mail servers, a PostgreSQL and
a Redis on loopback, a project file that uses them; two workers and a distributed run; then `sandbox stop`
stops every server it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

from mailconnector.sandbox import _alive


def _mc(directory: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAILCONNECTOR_PROJECT", "MAILCONNECTOR_STATE", "MAILCONNECTOR_BROKER")}
    return subprocess.run([sys.executable, "-m", "mailconnector", *args], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_a_sandbox_with_its_cluster_runs_two_workers_and_a_distributed_run(tmp_path: Path) -> None:
    started = _mc(tmp_path, "sandbox", "--background", "--with-cluster", "--json")
    assert started.returncode == 0, started.stderr
    info = json.loads(started.stdout)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        assert info["cluster"] is True and {"postgres", "redis"} <= set(info["ports"])
        state = json.loads((Path(info["rundir"]) / "sandbox.json").read_text())
        pids = state["pids"]
        assert all(_alive(pids[name]) for name in ("postgres", "redis", "dovecot", "postfix"))
        project = yaml.safe_load((tmp_path / "mailconnector.yaml").read_text())
        assert project["settings"]["state"].startswith("postgresql://mailconnector:${file:")
        assert project["settings"]["broker"].startswith("redis://:${file:")
        text = (tmp_path / "mailconnector.yaml").read_text()
        assert state["state_password"] not in text and state["broker_password"] not in text
        tok = uuid.uuid4().hex[:8]
        (tmp_path / "outbox.jsonl").write_text("".join(
            json.dumps({"to": "bob@example.test", "subject": f"cluster {tok} {i}", "text": "hello"}) + "\n"
            for i in range(12)))
        for n in range(2):
            log = open(tmp_path / f"worker-{n}.log", "wb")  # noqa: SIM115  (the child keeps it)
            workers.append(subprocess.Popen([sys.executable, "-m", "mailconnector", "worker", "--concurrency", "1"],
                                            cwd=tmp_path, stdout=log, stderr=log, start_new_session=True))
            log.close()
        deadline = time.monotonic() + 60
        while not all(" ready." in (tmp_path / f"worker-{n}.log").read_text(errors="replace") for n in range(2)):
            assert time.monotonic() < deadline, (tmp_path / "worker-0.log").read_text(errors="replace")[-2000:]
            time.sleep(0.1)  # poll interval
        ran = _mc(tmp_path, "run", "send-outbox", "--distributed", "--chunk-size", "4", "--wait", "--json")
        assert ran.returncode == 0, ran.stderr
        summary = json.loads(ran.stdout)
        assert summary["status"] == "success" and summary["written"] == 12
        assert _mc(tmp_path, "sandbox", "status").returncode == 0
    finally:
        for proc in workers:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in workers:
            proc.wait(timeout=60)
        stopped = _mc(tmp_path, "sandbox", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not any(_alive(pid) for pid in pids.values())
    assert not Path(info["rundir"]).exists()
