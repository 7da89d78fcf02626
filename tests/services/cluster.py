"""Distributed runs in tests: a project whose state is in PostgreSQL and whose broker is in Redis, with
``mailconnector worker`` processes started (and killed) by the tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailconnector._cluster import RedisServer
from mailconnector.sandbox import Sandbox

__all__ = ["PW_VAR", "Cluster", "Worker", "flush", "write_cluster_project", "write_outbox"]

PW_VAR = "MC_DISTRIBUTED_PASSWORD"


def flush(redis: RedisServer) -> None:
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as sock:
        sock.sendall(b"FLUSHALL\r\n")
        assert sock.recv(16).startswith(b"+OK")


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes (its own process group), and reap it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@dataclass
class Cluster:
    """A project directory whose file sends as alice through the sandbox, with the state in PostgreSQL and the
    broker in Redis; the workers and commands started in it."""

    directory: Path
    env: dict[str, str]
    state: str
    broker: str
    workers: list[Worker] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.directory / "mailconnector.yaml"

    def run(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailconnector", *args], cwd=cwd or self.directory,
                              env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def start_worker(self, *args: str, directory: Path | None = None, ready: bool = True) -> Worker:
        where = directory or self.directory
        log = where / f"worker-{len(self.workers)}-{uuid.uuid4().hex[:4]}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "mailconnector", "worker", "--concurrency", "1", *args],
                                    cwd=where, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        worker = Worker(proc, log)
        self.workers.append(worker)
        if ready:
            deadline = time.monotonic() + 60
            while " ready." not in worker.text():
                if proc.poll() is not None:
                    pytest.fail(f"the worker ended (exit {proc.returncode}):\n{worker.text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the worker was not ready within 60 s:\n{worker.text()[-3000:]}")
                time.sleep(0.1)  # poll interval
        return worker

    def run_info(self, run_id: str) -> dict[str, Any]:
        res = self.run("logs", run_id, "--json")
        assert res.returncode == 0, res.stderr
        info: dict[str, Any] = json.loads(res.stdout)
        return info

    def wait_for_end(self, run_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            info = self.run_info(run_id)
            if info["status"] != "running":
                return info
            if time.monotonic() > deadline:
                logs = "\n".join(w.text()[-2000:] for w in self.workers)
                raise AssertionError(f"run {run_id} still running after {timeout} s: {info}\n{logs}")
            time.sleep(0.3)  # poll interval

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait(timeout=30)


def write_cluster_project(directory: Path, sandbox: Sandbox, *, state: str, broker: str,
                          extra_settings: dict[str, Any] | None = None) -> None:
    data: dict[str, Any] = {
        "connections": {"mail": sandbox.connection_dict("alice", password=f"${{env:{PW_VAR}}}")},
        "activities": {"outbox": {"type": "file", "path": "outbox.jsonl"},
                       "send": {"type": "send-email", "connection": "mail", "concurrency": 2}},
        "operations": {"send-outbox": {"source": "outbox", "target": "send"}},
        "settings": {"state": state, "broker": broker, "chunk_size": 5, "redelivery_seconds": 6,
                     "lease_seconds": 6, **(extra_settings or {})},
    }
    (directory / "mailconnector.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def write_outbox(directory: Path, tok: str, count: int, *, bad: frozenset[int] = frozenset(),
                 name: str = "outbox.jsonl") -> None:
    """``count`` records to bob and carol (the ones in ``bad`` with an address no server takes); the token in
    each subject finds this test's messages in the mailboxes."""
    with open(directory / name, "w", encoding="utf-8") as f:
        for i in range(count):
            to = "not an address" if i in bad else f"{('bob', 'carol')[i % 2]}@example.test"
            f.write(json.dumps({"id": f"{tok}-{i}", "to": to, "subject": f"dist {tok} {i}",
                                "text": f"message {i} of {tok}"}) + "\n")
