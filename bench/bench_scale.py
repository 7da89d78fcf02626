"""Distributed sends with 1, 2 and 3 workers, through a network's round trip: how the work scales.

It starts its own sandbox (Postfix delivering into Dovecot), a throwaway PostgreSQL (the shared state), a
Redis (the broker) and the delay proxy (10 ms each way: a 20 ms round trip) in front of Postfix's submission
port, then for each worker count: starts that many ``mailconnector worker --concurrency 1`` processes (each
chunk sent over the send activity's four SMTP connections), runs ``mailconnector run send-outbox
--distributed --wait`` over ``--messages`` records of about 5 KB, and times it from submit to the run's end
in the shared log (whole processes, as a user runs them). For reference, each round also times the same
send as a plain ``mailconnector run`` in one process (no workers, no broker). Between runs the Postfix queue
drains and the mailbox is emptied. Rounds are interleaved and the best of each kept.

The ratio column is messages per second against one worker's; the target with three workers is 2.4.

Run: ``.venv/bin/python bench/bench_scale.py`` (about 3 minutes; ``--messages``, ``--rounds``, ``--workers``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_send import delay_proxy  # noqa: E402  (the same proxy as the send benchmark)

from mailconnector._cluster import PostgresServer, RedisServer  # noqa: E402  (throwaway servers)
from mailconnector.sandbox import Sandbox  # noqa: E402

PW_VAR = "MC_BENCH_SCALE_PASSWORD"
BODY = ("Dear customer, your statement for this month is attached below in plain text. " * 60)[:5000]


def drain(sbx: Sandbox, timeout: float = 300.0) -> None:
    queue = Path(sbx.info.rundir) / "pf-queue"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(p.is_file() for sub in ("incoming", "active", "deferred", "maildrop")
                   for p in (queue / sub).rglob("*")):
            break
        time.sleep(0.2)
    maildir = sbx.maildir("bob")
    for sub in ("new", "cur", "tmp"):
        for f in (maildir / sub).glob("*"):
            with contextlib.suppress(OSError):
                f.unlink()


def start_workers(directory: Path, env: dict[str, str], count: int) -> list[subprocess.Popen[bytes]]:
    procs = []
    for n in range(count):
        log = open(directory / f"worker-{n}.log", "wb")  # noqa: SIM115  (the child keeps it)
        procs.append(subprocess.Popen([sys.executable, "-m", "mailconnector", "worker", "--concurrency", "1"],
                                      cwd=directory, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                      start_new_session=True))
        log.close()
    deadline = time.monotonic() + 60
    for n in range(count):
        while " ready." not in (directory / f"worker-{n}.log").read_text(errors="replace"):
            if time.monotonic() > deadline or procs[n].poll() is not None:
                raise RuntimeError((directory / f"worker-{n}.log").read_text(errors="replace")[-2000:])
            time.sleep(0.1)
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def one_run(directory: Path, env: dict[str, str], messages: int, *,
            distributed: bool = True) -> tuple[float, dict[str, Any]]:
    tok = uuid.uuid4().hex[:8]
    with open(directory / "outbox.jsonl", "w", encoding="utf-8") as f:
        for i in range(messages):
            f.write(json.dumps({"id": f"{tok}-{i}", "to": "bob@example.test", "subject": f"statement {tok} {i}",
                                "text": BODY}) + "\n")
    started = time.perf_counter()
    argv = ["run", "send-outbox", "--json"] + (["--distributed", "--wait"] if distributed else [])
    res = subprocess.run([sys.executable, "-m", "mailconnector", *argv], cwd=directory, env=env,
                         capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    summary = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {"error": res.stderr[-500:]}
    if summary.get("written") != messages:
        print(f"warning: run not clean: {summary}", file=sys.stderr)
    return seconds, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=1500, help="records per run (default 1500)")
    parser.add_argument("--workers", default="1,2,3", help="worker counts (default 1,2,3)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds, best kept (default 2)")
    parser.add_argument("--chunk-size", type=int, default=50, help="records per chunk (default 50)")
    parser.add_argument("--delay", type=float, default=0.010, help="seconds one way (default 0.010)")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]

    work = Path(tempfile.mkdtemp(prefix="mc-bench-scale-"))
    sbx = Sandbox.start(users=("alice", "bob"))
    pg, redis = PostgresServer().start(), RedisServer().start()
    best: dict[int, tuple[float, dict[str, Any]]] = {}
    try:
        state = pg.create_database("bench_scale")
        with delay_proxy(sbx.info.ports["submission"], args.delay) as port:
            conn = sbx.connection_dict("alice", password=f"${{env:{PW_VAR}}}")
            conn["smtp"]["port"] = port
            (work / "mailconnector.yaml").write_text(yaml.safe_dump({
                "connections": {"mail": conn},
                "activities": {"outbox": {"type": "file", "path": "outbox.jsonl"},
                               "send": {"type": "send-email", "connection": "mail", "concurrency": 4}},
                "operations": {"send-outbox": {"source": "outbox", "target": "send"}},
                "settings": {"state": state, "broker": redis.url, "chunk_size": args.chunk_size,
                             "redelivery_seconds": 600}}, sort_keys=False))
            env = {k: v for k, v in os.environ.items()
                   if k not in ("MAILCONNECTOR_PROJECT", "MAILCONNECTOR_STATE", "MAILCONNECTOR_BROKER")}
            env[PW_VAR] = sbx.info.password("alice")
            print(f"{args.messages} messages of ~5 KB per run, chunks of {args.chunk_size}, "
                  f"{2 * args.delay * 1000:.0f} ms round trip; {os.cpu_count()} CPUs", flush=True)
            for _ in range(args.rounds):
                drain(sbx)
                seconds, summary = one_run(work, env, args.messages, distributed=False)
                print(f"  no workers (run here): {seconds:6.2f} s  {args.messages / seconds:7.1f} msg/s  "
                      f"({summary.get('status')})", flush=True)
                if 0 not in best or seconds < best[0][0]:
                    best[0] = (seconds, summary)
                for n in counts:
                    drain(sbx)
                    procs = start_workers(work, env, n)
                    try:
                        seconds, summary = one_run(work, env, args.messages)
                    finally:
                        stop_workers(procs)
                    rate = args.messages / seconds
                    print(f"  {n} worker(s): {seconds:6.2f} s  {rate:7.1f} msg/s  ({summary.get('status')})",
                          flush=True)
                    if n not in best or seconds < best[n][0]:
                        best[n] = (seconds, summary)
        base = args.messages / best[counts[0]][0]
        print("\n| workers | seconds | msg/s | vs one worker |\n|---|---|---|---|")
        print(f"| none (`run` in one process) | {best[0][0]:.2f} | {args.messages / best[0][0]:.1f} | "
              f"{args.messages / best[0][0] / base:.2f}× |")
        for n in counts:
            rate = args.messages / best[n][0]
            print(f"| {n} | {best[n][0]:.2f} | {rate:.1f} | {rate / base:.2f}× |")
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (1 min)")
    finally:
        redis.stop()
        pg.stop()
        sbx.remove()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
