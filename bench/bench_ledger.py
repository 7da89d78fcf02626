"""What the send ledger costs on the send path: Send Email with no ledger, a SQLite ledger and a PostgreSQL
ledger, against a real Postfix, in one run.

Since the ledger was rebuilt, ``SendEmail(..., store=store)`` does per message: one read before taking a
connection (is this Message-ID known?), one durable insert while the server answers MAIL/RCPT/DATA, before the data
(the claim, while the connection is held), and one durable update after the final 250 (the settle, once
the connection is back in the pool); and once per send it takes a sender lease. This bench measures it:

1. Sends. Its own sandbox (Postfix delivering into Dovecot on loopback, the plain ``smtp`` port with AUTH
   PLAIN, as in ``bench_send.py``), 2,000 messages of about 5 KB, at 4 connections and at 1, for each
   contender: ``store=None`` (no ledger: the floor), a SQLite store (WAL; each claim synced to disk, settles
   not, on this machine's disk under /tmp) and a PostgreSQL store on a throwaway server started here with the test
   suite's (``mailconnector/_cluster/postgres.py``). That server runs with ``fsync=off`` (and
   ``synchronous_commit=off``), so its figure excludes the disk flush; a second PostgreSQL server with
   ``fsync``, ``synchronous_commit`` and ``full_page_writes`` back on gives the durable figure
   (``--no-pg-fsync`` skips it). Every record has an ``id`` naming the round, so every Message-ID is new
   and nothing is skipped as already sent. msg/s until the final 250 of the last message; between runs
   the Postfix queue is drained and the mailbox emptied. Interleaved rounds (``--rounds``, default 2:
   A B C D A B C D ...), the best of each kept; every round's figure is printed too. The three ledger calls
   of each message are timed inside the send (a thin wrapper around the store), to show where the time goes.
2. The bare ledger, outside SMTP: 2,000 claim + settle pairs per backend from 4 threads (and from 1),
   pairs per second and the median latency of each call, to explain the send figures: the claim sits on
   the connection's path, so at ``c`` connections it costs up to ``c × claim latency`` per message.

Run: ``.venv/bin/python bench/bench_ledger.py`` (6 to 8 minutes on 2 busy CPUs; ``--quick`` for a
300-message, one-round smoke run of about a minute; ``--json FILE`` writes the raw figures). Everything it starts
(sandbox, PostgreSQL servers, temporary directories) is removed at the end, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, cast

from mailconnector.activities.send import SendEmail
from mailconnector.mime.compose import compose
from mailconnector.records.send import parse_send_request
from mailconnector.sandbox import Sandbox
from mailconnector.state import StateStore, Store

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_send  # noqa: E402  (bench/ is no package)

from mailconnector._cluster import PostgresServer  # noqa: E402  (the test suite's throwaway server)

SENDER = bench_send.SENDER
RECIPIENT = bench_send.RECIPIENT
SMALL_BODY = bench_send.SMALL_BODY


# --------------------------------------------------------------------------- results


@dataclass
class Contender:
    key: str  # "none", "sqlite", "pg", "pg-fsync"
    label: str
    store: StateStore | None  # the store the sends use
    micro: StateStore | None = None  # a separate store (same backend) for the bare claim + settle loop
    note: str = ""


@dataclass
class SendRun:
    contender: str
    concurrency: int
    round: int
    count: int
    sent: int
    seconds: float
    statuses: dict[str, int]
    load_1min: float
    timed_out: bool = False
    in_send_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # ledger call -> percentiles

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


@dataclass
class LedgerRun:
    backend: str
    threads: int
    round: int
    pairs: int  # claim + settle pairs done
    seconds: float
    claim_ms: dict[str, float] = field(default_factory=dict)  # p50, p95
    settle_ms: dict[str, float] = field(default_factory=dict)
    load_1min: float = 0.0
    timed_out: bool = False

    @property
    def rate(self) -> float:
        return self.pairs / self.seconds if self.seconds else 0.0


def _percentiles(values: list[float]) -> dict[str, float]:
    """Milliseconds: median, 90th and 95th percentile, mean."""
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p95": 0.0, "mean": 0.0}
    ms = sorted(v * 1000 for v in values)
    return {"p50": statistics.median(ms), "p90": ms[min(len(ms) - 1, int(len(ms) * 0.90))],
            "p95": ms[min(len(ms) - 1, int(len(ms) * 0.95))], "mean": statistics.fmean(ms)}


class TimedStore:
    """Hands every call to ``store`` and times the three the send path makes per message: the lookup before
    taking a connection (``ledger_entry``), the claim as the transaction starts and the settle after the
    final 250. (About a microsecond per call; what it measures is each call's latency inside a running
    send.)"""

    TIMED = ("ledger_entry", "claim", "settle")

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self.times: dict[str, list[float]] = {name: [] for name in self.TIMED}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in self.TIMED:
            return attr
        times = self.times[name]

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                with self._lock:
                    times.append(elapsed)

        return timed

    def latencies(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {name: _percentiles(values) for name, values in self.times.items()}


# --------------------------------------------------------------------------- the runs


class LedgerBench:
    def __init__(self, sbx: Sandbox, work: Path, token: str) -> None:
        self.helper = bench_send.Bench(sbx, work)  # its connection() and drain()
        self.work = work
        self.token = token
        self.conn = self.helper.connection("smtp")
        self.sends: list[SendRun] = []
        self.ledger: list[LedgerRun] = []

    def message_size(self) -> int:
        record = self._record("size", 0)
        return len(compose(parse_send_request(record, index=0), default_from=SENDER).as_bytes())

    def _record(self, prefix: str, i: int) -> dict[str, Any]:
        # A distinct id per contender, connection count, round and message: a new Message-ID every time.
        return {"id": f"{prefix}-{i}", "to": RECIPIENT, "subject": f"ledger bench {prefix} {i}", "text": SMALL_BODY}

    def drain(self) -> None:
        self.helper.drain()

    def send(self, contender: Contender, count: int, concurrency: int, round_no: int, *, timeout: float,
             record: bool = True) -> SendRun:
        prefix = f"{self.token}-{contender.key}-c{concurrency}-r{round_no}"
        records = (self._record(prefix, i) for i in range(count))
        statuses: Counter[str] = Counter()
        timed_out = False
        load = os.getloadavg()[0]
        deadline = time.monotonic() + timeout
        started = time.perf_counter()
        timed = TimedStore(contender.store) if contender.store is not None else None
        store = cast(StateStore, timed) if timed is not None else None
        activity = SendEmail(self.conn, store=store, base_dir=self.work, concurrency=concurrency)
        responses = activity.send(records)
        try:
            for response in responses:
                statuses[response.status] += 1
                if time.monotonic() > deadline:
                    timed_out = True
                    break
        finally:  # closes its connections and waits for its workers, also on Ctrl-C
            if isinstance(responses, Generator):
                responses.close()
        seconds = time.perf_counter() - started
        run = SendRun(contender.key, concurrency, round_no, count, statuses["sent"], seconds, dict(statuses), load,
                      timed_out, timed.latencies() if timed is not None else {})
        if statuses["sent"] != count or timed_out:
            print(f"warning: {contender.label} c={concurrency}: statuses {dict(statuses)}"
                  f"{' (stopped at the time limit)' if timed_out else ''}", file=sys.stderr, flush=True)
        if record:
            self.sends.append(run)
            lat = run.in_send_ms
            calls = "" if not lat else (f"  in send p50: lookup {lat['ledger_entry']['p50']:.2f}, claim "
                                        f"{lat['claim']['p50']:.2f} (p90 {lat['claim']['p90']:.1f}), settle "
                                        f"{lat['settle']['p50']:.2f} ms")
            print(f"  round {round_no}  {contender.label:34} c={concurrency}  {run.sent:5} sent  {seconds:7.2f} s  "
                  f"{run.rate:7.1f} msg/s  (load {load:.1f}){calls}", flush=True)
        return run

    def claim_settle(self, contender: Contender, pairs: int, threads: int, round_no: int, *,
                     timeout: float) -> LedgerRun:
        """``pairs`` claim + settle pairs on the backend's separate store from ``threads`` threads."""
        store = contender.micro
        assert store is not None
        prefix = f"{self.token}-{contender.key}-t{threads}-r{round_no}"
        holder = f"bench-ledger:{os.getpid()}:{prefix}"
        claims: list[list[float]] = [[] for _ in range(threads)]
        settles: list[list[float]] = [[] for _ in range(threads)]
        errors: list[BaseException] = []
        stop = threading.Event()
        deadline = time.monotonic() + timeout

        def work(t: int) -> None:
            try:
                for i in range(t, pairs, threads):
                    if stop.is_set() or time.monotonic() > deadline:
                        return
                    message_id = f"<{prefix}-{i}@bench.example.test>"
                    t0 = time.perf_counter()
                    claim = store.claim(message_id, connection="bench", holder=holder, recipients=[RECIPIENT])
                    t1 = time.perf_counter()
                    if not claim.granted:
                        raise RuntimeError(f"claim of {message_id} refused: {claim}")
                    store.settle(message_id, holder=holder, status="sent", accepted=[RECIPIENT])
                    t2 = time.perf_counter()
                    claims[t].append(t1 - t0)
                    settles[t].append(t2 - t1)
            except BaseException as exc:
                errors.append(exc)
                stop.set()

        load = os.getloadavg()[0]
        workers = [threading.Thread(target=work, args=(t,), name=f"bench-ledger-{t}", daemon=True)
                   for t in range(threads)]
        started = time.perf_counter()
        try:
            for w in workers:
                w.start()
            for w in workers:
                w.join(max(0.0, deadline - time.monotonic()) + 30)
        finally:
            stop.set()
        seconds = time.perf_counter() - started
        if errors:
            raise errors[0]
        done = sum(len(c) for c in claims)
        run = LedgerRun(contender.key, threads, round_no, done, seconds,
                        _percentiles([x for c in claims for x in c]), _percentiles([x for s in settles for x in s]),
                        load, done < pairs)
        self.ledger.append(run)
        print(f"  round {round_no}  {contender.label:34} {threads} thread{'s' if threads > 1 else ' '}  {done:5} "
              f"claim+settle  {seconds:6.2f} s  {run.rate:7.0f} pairs/s  claim p50 {run.claim_ms['p50']:.2f} ms, "
              f"settle p50 {run.settle_ms['p50']:.2f} ms  (load {load:.1f})", flush=True)
        return run


# --------------------------------------------------------------------------- setup


def start_postgres(stack: contextlib.ExitStack, server: PostgresServer, label: str,
                   notes: list[str]) -> tuple[str, str] | None:
    """Start ``server`` (stopped by ``stack``); the URLs of a send database and a claim-loop database."""
    stack.callback(server.stop)
    try:
        server.start()
        urls = server.create_database("ledger_send"), server.create_database("ledger_micro")
        settings = server.psql("SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings "
                               "WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes')")
        version = server.psql("SHOW server_version")
    except Exception as exc:  # not installed, or the class changed under the subclass: note it, go on
        notes.append(f"{label}: not measured ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
        print(f"warning: {notes[-1]}", file=sys.stderr, flush=True)
        server.stop()
        return None
    notes.append(f"{label}: PostgreSQL {version} on 127.0.0.1:{server.port}, {settings}")
    return urls


def open_store(stack: contextlib.ExitStack, target: str | Path) -> StateStore:
    store = Store(target)
    stack.callback(store.close)
    return store


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# --------------------------------------------------------------------------- report


def best_send(bench: LedgerBench, key: str, c: int) -> tuple[SendRun | None, list[SendRun]]:
    """The best of the rounds (the machine's other load only ever slows a run down), and all of them."""
    runs = [r for r in bench.sends if r.contender == key and r.concurrency == c]
    return (max(runs, key=lambda r: r.rate) if runs else None), runs


def best_ledger(bench: LedgerBench, key: str, threads: int) -> LedgerRun | None:
    runs = [r for r in bench.ledger if r.backend == key and r.threads == threads]
    return max(runs, key=lambda r: r.rate) if runs else None


def report(bench: LedgerBench, contenders: list[Contender], concurrencies: list[int], count: int,
           size: int) -> list[list[str]]:
    header = ["contender", "conns", "msg/s (best)", "each round", "vs no ledger", "added ms/msg per conn",
              "in send: lookup / claim / settle p50 ms", "claim p90 / mean ms", "bare claim+settle pairs/s"]
    rows: list[list[str]] = []
    for c in concurrencies:
        floor, _ = best_send(bench, "none", c)
        for contender in contenders:
            best, runs = best_send(bench, contender.key, c)
            if best is None:
                continue
            each = " / ".join(f"{r.rate:,.0f}" for r in runs)
            ratio = added = "—"
            if floor is not None and floor.rate and best.rate:
                ratio = f"{best.rate / floor.rate:.2f}×"
                if contender.key != "none":
                    added = f"{c * (1000 / best.rate - 1000 / floor.rate):+.2f}"
            micro = best_ledger(bench, contender.key, c)
            pairs = f"{micro.rate:,.0f} ({c} thread{'s' if c > 1 else ''})" if micro is not None else "—"
            calls = tail = "—"
            if best.in_send_ms:
                lat = best.in_send_ms
                calls = " / ".join(f"{lat[name]['p50']:.2f}" for name in TimedStore.TIMED)
                tail = f"{lat['claim']['p90']:.1f} / {lat['claim']['mean']:.1f}"
            flag = "" if best.sent == best.count and not best.timed_out else f" ({best.sent}/{best.count} sent)"
            rows.append([contender.label, str(c), f"{best.rate:,.0f}{flag}", each, ratio, added, calls, tail, pairs])
    print(bench_send.table(
        f"Send Email, loopback, plain `smtp` port with AUTH, {count:,} messages of {size:,} bytes, msg/s until the "
        "final 250 (best of the rounds); in send: the ledger calls' latency in that run; bare: claim + settle "
        "pairs on the same backend without SMTP",
        header, rows))
    micro_rows = []
    for contender in contenders:
        if contender.micro is None:
            continue
        for t in concurrencies:
            m = best_ledger(bench, contender.key, t)
            if m is not None:
                micro_rows.append([contender.label, str(t), f"{m.pairs:,}", f"{m.rate:,.0f}",
                                   f"{m.claim_ms['p50']:.2f} / {m.claim_ms['p95']:.2f}",
                                   f"{m.settle_ms['p50']:.2f} / {m.settle_ms['p95']:.2f}"])
    print(bench_send.table("The bare ledger: claim + settle pairs (best of the rounds)",
                           ["backend", "threads", "pairs", "pairs/s", "claim ms p50 / p95", "settle ms p50 / p95"],
                           micro_rows))
    return rows


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="5 KB messages per send run (default 2000)")
    parser.add_argument("--pairs", type=int, default=2000, help="claim + settle pairs per ledger run (default 2000)")
    parser.add_argument("--concurrency", default="4,1", help="comma-separated connections (default 4,1)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds, best kept (default 2)")
    parser.add_argument("--warmup", type=int, default=50, help="unrecorded messages per contender first (default 50)")
    parser.add_argument("--run-timeout", type=float, default=600.0, help="seconds before a run is cut (default 600)")
    parser.add_argument("--no-pg-fsync", action="store_true", help="skip the PostgreSQL server with fsync on")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 messages and pairs, one round")
    parser.add_argument("--json", type=Path, help="write the raw figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.pairs, args.rounds, args.warmup = 300, 300, 1, 20
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    if min(concurrencies) < 1 or args.rounds < 1 or args.messages < 1 or args.pairs < 1:
        parser.error("--concurrency, --rounds, --messages and --pairs must be positive")

    started = time.monotonic()
    load_start = os.getloadavg()
    old_handlers = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    notes: list[str] = []
    try:
        with contextlib.ExitStack() as stack:  # unwinds everything started so far, whatever stops the run
            work = Path(tempfile.mkdtemp(prefix="mc-bench-ledger-"))
            stack.callback(shutil.rmtree, work, ignore_errors=True)
            work.chmod(0o755)  # the sandbox's daemons run as unprivileged users and traverse it
            print(f"{os.cpu_count()} CPUs, load average {load_start[0]:.2f} / {load_start[1]:.2f} / "
                  f"{load_start[2]:.2f} (1/5/15 min); Python {platform.python_version()}, SQLite "
                  f"{sqlite3.sqlite_version}; work directory {work}", flush=True)
            sbx = Sandbox.start(work / "sbx", users=("alice", "bob"))
            stack.callback(sbx.remove)
            token = secrets.token_hex(4)
            bench = LedgerBench(sbx, work, token)
            size = bench.message_size()

            contenders = [Contender("none", "no ledger (store=None)", None)]
            contenders.append(Contender("sqlite", "SQLite ledger (WAL, claims synced)",
                                        open_store(stack, work / "state.db"), open_store(stack, work / "micro.db")))
            notes.append(f"SQLite: {work / 'state.db'} on the {_fs_type(work)} filesystem under {work.parent}, "
                         "journal_mode=WAL; claims synced to disk as they return (synchronous=FULL for that "
                         "statement), settles synchronous=NORMAL")
            servers: list[tuple[str, str, PostgresServer]] = [("pg", "PostgreSQL ledger (fsync=off)", PostgresServer())]
            if not args.no_pg_fsync:
                servers.append(("pg-fsync", "PostgreSQL ledger (fsync=on)", PostgresServer(durable=True)))
            for key, label, server in servers:
                urls = start_postgres(stack, server, label, notes)
                if urls is not None:
                    contenders.append(Contender(key, label, open_store(stack, urls[0]), open_store(stack, urls[1])))
            if args.no_pg_fsync:
                notes.append("PostgreSQL (fsync=on): skipped (--no-pg-fsync)")
            print(f"sandbox up; {size:,} bytes per message on the wire; contenders: "
                  f"{', '.join(c.label for c in contenders)}", flush=True)
            for note in notes:
                print(f"  {note}", flush=True)

            if args.warmup:
                print(f"warm-up: {args.warmup} messages per contender (not recorded)", flush=True)
                for contender in contenders:
                    bench.drain()
                    bench.send(contender, args.warmup, max(concurrencies), 0, timeout=args.run_timeout,
                               record=False)
            for round_no in range(1, args.rounds + 1):
                for c in concurrencies:
                    for contender in contenders:  # interleaved: A B C D, then again
                        bench.drain()
                        bench.send(contender, args.messages, c, round_no, timeout=args.run_timeout)
                bench.drain()
                for contender in contenders:
                    if contender.micro is not None:
                        for t in concurrencies:
                            bench.claim_settle(contender, args.pairs, t, round_no, timeout=args.run_timeout)
            bench.drain()
            rows = report(bench, contenders, concurrencies, args.messages, size)
            load_end = os.getloadavg()
            elapsed = time.monotonic() - started
            print("\nNotes:")
            for note in notes:
                print(f"- {note}")
            print("- PostgreSQL (fsync=off) is the test suite's server: its figure excludes the disk flush of a "
                  "commit.")
            print("- 'added ms/msg per conn' = conns × (1000/rate − 1000/no-ledger rate): the extra time each "
                  "connection spends per message. The claim runs while the worker holds its connection; the lookup "
                  "runs before the worker takes its turn for a connection (turns are in input order), the settle "
                  "after it gave the connection back; there are conns + 1 workers.")
            print(f"\nload average at the start: {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}, "
                  f"at the end: {load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} (1/5/15 min); "
                  f"{os.cpu_count()} CPUs; run time {elapsed / 60:.1f} min", flush=True)
            if args.json:
                args.json.write_text(json.dumps({
                    "messages": args.messages, "message_bytes": size, "pairs": args.pairs, "rounds": args.rounds,
                    "concurrency": concurrencies, "cpus": os.cpu_count(), "load_start": load_start,
                    "load_end": load_end, "seconds": elapsed, "python": platform.python_version(),
                    "sqlite": sqlite3.sqlite_version, "notes": notes,
                    "contenders": [{"key": c.key, "label": c.label} for c in contenders],
                    "sends": [{**asdict(r), "rate": r.rate} for r in bench.sends],
                    "ledger": [{**asdict(r), "rate": r.rate} for r in bench.ledger],
                    "table": rows,
                }, indent=2) + "\n")
                print(f"raw figures written to {args.json}")
    except KeyboardInterrupt:
        print("\ninterrupted: everything this bench started was stopped and removed", file=sys.stderr)
        return 130
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    return 0


def _fs_type(path: Path) -> str:
    """The filesystem type of ``path`` (from /proc/self/mounts; the longest mount point containing it)."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return kind


if __name__ == "__main__":
    sys.exit(main())
