"""Send Email throughput and memory against a real Postfix, compared with what people use instead.

It starts its own sandbox (Postfix delivering into Dovecot on loopback), runs everything in one go and
removes the sandbox at the end:

1. Loopback (CPU-bound), against Postfix's own load generator ``smtp-source``: 2,000 messages of about
   5 KB and 200 messages with a 1 MB attachment, at 1, 4 and 8 connections. ``smtp-source`` does no TLS
   and no AUTH, so both use the plain ``smtp`` port; the activity logs in there (AUTH PLAIN), and
   ``smtp-source`` runs with ``-d`` (keeps its connections, like the activity) and ``-F`` with the
   activity's own message bytes. Two interleaved rounds (``--rounds``); the better of each is kept.
2. Through ``delay_proxy.py`` (10 ms added one way to every chunk: a 20 ms round trip), against a plain
   ``smtplib`` loop that opens one connection per message (STARTTLS + login + sendmail + quit, what most
   scripts do), both on the submission port with STARTTLS. The loop sends a sample (``--naive-small``,
   ``--naive-large`` messages): at five messages a second the full count would take minutes.
3. Peak memory of the activity (1 MB attachments, 8 connections) in a fresh subprocess for 200 and for
   800 messages: it must stay under 150 MB and not grow with the count.

Throughput is measured until the server accepted each message (its final 250 after the data), not until
Dovecot stored it: delivery into the mailbox is asynchronous. Between runs the bench waits for Postfix's
queue to drain and empties the mailbox, so one run's deliveries do not slow the next.

Run: ``.venv/bin/python bench/bench_send.py`` (about 12 minutes; ``--quick`` for a smaller smoke run).
The figures and what they led to are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from mailconnector.activities.send import SendEmail
from mailconnector.connection import Connection
from mailconnector.mime.compose import compose
from mailconnector.records.send import parse_send_request
from mailconnector.sandbox import Sandbox
from mailconnector.state import Store

HERE = Path(__file__).resolve().parent
SMTP_SOURCE = "/usr/sbin/smtp-source"
SENDER = "alice@example.test"
RECIPIENT = "bob@example.test"
WORDS = ["invoice", "order", "shipment", "meeting", "agenda", "quarterly", "report", "update", "review",
         "contract", "payment", "balance", "account", "delivery", "schedule", "project", "budget", "forecast"]


def body_text(size: int) -> str:
    """Plain ASCII prose of about ``size`` bytes, in lines of ~70 characters."""
    out: list[str] = []
    line: list[str] = []
    total = 0
    i = 0
    while total < size:
        word = WORDS[(i * 7) % len(WORDS)]
        i += 1
        line.append(word)
        if sum(len(w) + 1 for w in line) > 70:
            text = " ".join(line)
            out.append(text)
            total += len(text) + 1
            line = []
    return "\n".join(out) + "\n"


SMALL_BODY = body_text(4_700)  # + headers: about 5 KB on the wire


@dataclass
class Result:
    name: str
    transport: str  # "loopback" or "proxy"
    kind: str  # "small" or "large"
    concurrency: int
    count: int
    seconds: float
    ok: int
    round: int = 1

    @property
    def key(self) -> tuple[str, str, str, int]:
        return self.name, self.transport, self.kind, self.concurrency

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


# --------------------------------------------------------------------------- the sandbox around the runs


class Bench:
    def __init__(self, sbx: Sandbox, work: Path) -> None:
        self.sbx = sbx
        self.work = work
        self.attachment = work / "attachment.bin"
        self.attachment.write_bytes(os.urandom(1024 * 1024))
        self.password = sbx.info.password(SENDER)
        self.results: list[Result] = []
        self.run_no = 0

    def connection(self, port_name: str, *, port: int | None = None) -> Connection:
        data = self.sbx.connection_dict("alice", smtp=port_name)
        if port is not None:
            data["smtp"]["port"] = port
        data["timeouts"] = {"connect": 10, "command": 120}
        return Connection.from_dict(data, name=f"bench-{port_name}")

    def records(self, count: int, *, large: bool) -> Iterator[dict[str, Any]]:
        self.run_no += 1
        for i in range(count):
            record: dict[str, Any] = {"to": RECIPIENT, "subject": f"bench {self.run_no} {i}", "text": SMALL_BODY}
            if large:
                record["text"] = "The file is attached.\n"
                record["attachments"] = [{"path": str(self.attachment), "filename": "data.bin"}]
            yield record

    def sample(self, *, large: bool) -> bytes:
        """One message exactly as the activity composes it."""
        record = next(self.records(1, large=large))
        return compose(parse_send_request(record, index=0), default_from=SENDER).as_bytes()

    def drain(self, timeout: float = 300.0) -> None:
        """Wait until Postfix handed everything to Dovecot, then empty the mailbox (disk and CPU for the next run)."""
        queue = Path(self.sbx.info.rundir) / "pf-queue"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = sum(1 for sub in ("incoming", "active", "deferred", "maildrop")
                          for p in (queue / sub).rglob("*") if p.is_file())
            if pending == 0:
                break
            time.sleep(0.2)
        else:
            print(f"warning: the Postfix queue did not drain within {timeout:.0f} s", file=sys.stderr)
        maildir = self.sbx.maildir("bob")
        for sub in ("new", "cur", "tmp"):
            for f in (maildir / sub).glob("*"):
                with contextlib.suppress(OSError):
                    f.unlink()

    # ----------------------------------------------------------------- contenders
    def activity(self, conn: Connection, count: int, concurrency: int, *, large: bool, transport: str) -> Result:
        store = Store(self.work / f"ledger-{self.run_no}.db")
        records = self.records(count, large=large)
        statuses: Counter[str] = Counter()
        started = time.perf_counter()
        activity = SendEmail(conn, concurrency=concurrency, store=store, base_dir=self.work)
        for response in activity.send(records):
            statuses[response.status] += 1
        seconds = time.perf_counter() - started
        store.close()
        if statuses["sent"] != count:
            print(f"warning: activity statuses {dict(statuses)}", file=sys.stderr, flush=True)
        kind = "large" if large else "small"
        return self._add(Result("Send Email activity", transport, kind, concurrency, count, seconds, statuses["sent"]))

    def smtp_source(self, count: int, concurrency: int, *, kind: str) -> Result:
        """smtp-source sending the activity's own message bytes (-F), so Postfix has the same work to do."""
        port = self.sbx.info.ports["smtp"]
        sample = self.work / f"{kind}.eml"
        if not sample.exists():
            sample.write_bytes(self.sample(large=kind == "large").replace(b"\r\n", b"\n"))
        cmd = [SMTP_SOURCE, "-d", "-s", str(concurrency), "-m", str(count), "-F", str(sample), "-f", SENDER,
               "-t", RECIPIENT, "-M", "bench.example.test", f"127.0.0.1:{port}"]
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if proc.returncode:
            print(f"warning: smtp-source exited {proc.returncode}: {proc.stderr.strip()[:300]}", file=sys.stderr)
        ok = count if proc.returncode == 0 else 0
        return self._add(Result("smtp-source -d -F (no TLS, no AUTH)", "loopback", kind, concurrency, count, seconds,
                                ok))

    def naive_loop(self, port: int, count: int, *, large: bool, transport: str) -> Result:
        """One connection per message: connect, STARTTLS, login, sendmail, quit."""
        ctx = ssl.create_default_context(cafile=self.sbx.info.ca_file)
        ok = 0
        started = time.perf_counter()
        for i in range(count):
            msg = EmailMessage()
            msg["From"] = SENDER
            msg["To"] = RECIPIENT
            msg["Subject"] = f"naive {i}"
            if large:
                msg.set_content("The file is attached.\n")
                msg.add_attachment(self.attachment.read_bytes(), maintype="application",
                                   subtype="octet-stream", filename="data.bin")
            else:
                msg.set_content(SMALL_BODY)
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
                smtp.starttls(context=ctx)
                smtp.login(SENDER, self.password)
                refused = smtp.send_message(msg)
                ok += not refused
        seconds = time.perf_counter() - started
        return self._add(Result("smtplib loop, new connection each", transport, "large" if large else "small", 1,
                                count, seconds, ok))

    def _add(self, result: Result) -> Result:
        self.results.append(result)
        result.round = sum(1 for r in self.results if r.key == result.key)
        print(f"  {result.name:36} {result.transport:8} {result.kind:5} c={result.concurrency}  {result.count:5} msgs  "
              f"{result.seconds:7.2f} s  {result.rate:8.1f} msg/s", flush=True)
        return result


@contextlib.contextmanager
def delay_proxy(upstream_port: int, delay: float) -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, str(HERE / "delay_proxy.py"), "--upstream", f"127.0.0.1:{upstream_port}",
                             "--delay", str(delay)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            raise RuntimeError("the delay proxy did not start")
        yield int(line[1])
    finally:
        proc.terminate()
        proc.wait(10)


# --------------------------------------------------------------------------- memory (child process)


def memory_child(rundir: str, count: int, concurrency: int, attachment: str) -> None:
    """Run in a fresh interpreter: send ``count`` 1 MB messages; print peak RSS as JSON."""
    sbx = Sandbox.attach(Path(rundir))
    data = sbx.connection_dict("alice", smtp="smtp")
    conn = Connection.from_dict(data, name="bench-memory")
    baseline = _peak_rss_mb()

    def records() -> Iterator[dict[str, Any]]:
        for i in range(count):
            yield {"to": RECIPIENT, "subject": f"memory {i}", "text": "attached",
                   "attachments": [{"path": attachment, "filename": "data.bin"}]}

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "ledger.db")
        statuses: Counter[str] = Counter()
        started = time.perf_counter()
        activity = SendEmail(conn, concurrency=concurrency, store=store, base_dir=Path(attachment).parent)
        for response in activity.send(records()):
            statuses[response.status] += 1
        seconds = time.perf_counter() - started
    peak = _peak_rss_mb()
    print(json.dumps({"count": count, "sent": statuses["sent"], "seconds": seconds, "baseline_mb": baseline,
                      "peak_mb": peak}))


def _peak_rss_mb() -> float:
    """This process's peak RSS. Not getrusage's ru_maxrss: on Linux it survives exec, so a child started
    from this (big) bench process would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_run(bench: Bench, count: int, concurrency: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--memory-child", str(count), "--rundir", bench.sbx.info.rundir,
                           "--concurrency", str(concurrency), "--attachment", str(bench.attachment)],
                          capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["sent"] != count:
        raise RuntimeError(f"the memory run sent {result['sent']} of {count} messages")
    print(f"  memory: {count} × 1 MB at c={concurrency}: peak RSS {result['peak_mb']:.0f} MB "
          f"(after imports {result['baseline_mb']:.0f} MB), {result['sent']} sent in {result['seconds']:.1f} s",
          flush=True)
    return result


# --------------------------------------------------------------------------- report


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return ""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [f"\n{title}\n", "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def report(bench: Bench, memory: list[dict[str, Any]], sizes: dict[str, int], concurrencies: list[int]) -> None:
    def find(name: str, transport: str, kind: str, c: int) -> Result | None:
        """The best of the rounds: the machine's other load only ever slows a run down."""
        found = [r for r in bench.results
                 if r.name.startswith(name) and r.transport == transport and r.kind == kind and r.concurrency == c]
        return max(found, key=lambda r: r.rate) if found else None

    for kind, label in (("small", f"~{sizes['small'] / 1024:.1f} KB messages"),
                        ("large", f"1 MB attachment ({sizes['large'] / 1e6:.2f} MB on the wire)")):
        rows = []
        for c in concurrencies:
            ours = find("Send Email", "loopback", kind, c)
            theirs = find("smtp-source", "loopback", kind, c)
            if ours and theirs:
                rows.append([str(c), f"{ours.count}", f"{ours.rate:,.0f}", f"{theirs.rate:,.0f}",
                             f"{ours.rate / theirs.rate:.2f}×", "≥ 0.5×"])
        print(table(f"Loopback, plain `smtp` port — {label}: Send Email (AUTH PLAIN) vs smtp-source -d "
                    "(no TLS, no AUTH), msg/s until the final 250",
                    ["connections", "messages", "Send Email", "smtp-source", "ratio", "target"], rows))
        naive = find("smtplib loop", "proxy", kind, 1)
        rows = []
        for c in concurrencies:
            ours = find("Send Email", "proxy", kind, c)
            if ours and naive:
                rows.append([str(c), f"{ours.count}", f"{ours.rate:,.1f}", f"{naive.rate:,.1f} ({naive.count} msgs)",
                             f"{ours.rate / naive.rate:.1f}×", "≥ 5×"])
        print(table(f"Through the delay proxy (+10 ms each way), submission port with STARTTLS — {label}: Send "
                    "Email vs a smtplib loop with a new connection per message, msg/s",
                    ["connections", "messages", "Send Email", "smtplib loop", "ratio", "target"], rows))
    rows = [[str(m["count"]), f"{m['baseline_mb']:.0f}", f"{m['peak_mb']:.0f}", "< 150, flat"] for m in memory]
    print(table("Peak RSS of the activity process, 1 MB attachments, 8 connections (MB)",
                ["messages", "after imports", "peak", "target"], rows))


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--small", type=int, default=2000, help="5 KB messages per run (default 2000)")
    parser.add_argument("--large", type=int, default=200, help="1 MB messages per run (default 200)")
    parser.add_argument("--naive-small", type=int, default=150, help="5 KB messages for the smtplib loop")
    parser.add_argument("--naive-large", type=int, default=40, help="1 MB messages for the smtplib loop")
    parser.add_argument("--concurrency", default="1,4,8", help="comma-separated (default 1,4,8)")
    parser.add_argument("--delay", type=float, default=0.010, help="delay proxy, seconds one way (default 0.010)")
    parser.add_argument("--memory", default="200,800", help="message counts for the memory runs (default 200,800)")
    parser.add_argument("--rounds", type=int, default=2, help="loopback rounds, best kept (default 2)")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--only", choices=["loopback", "proxy", "memory"], action="append",
                        help="run only these parts (repeatable)")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rundir", help=argparse.SUPPRESS)
    parser.add_argument("--attachment", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    if args.memory_child is not None:
        memory_child(args.rundir, args.memory_child, concurrencies[-1], args.attachment)
        return 0
    if args.quick:
        args.small, args.large, args.naive_small, args.naive_large, args.memory = 200, 20, 20, 5, "20,80"
        args.rounds = 1
    parts = set(args.only or ["loopback", "proxy", "memory"])
    if not Path(SMTP_SOURCE).exists():
        print(f"{SMTP_SOURCE} not found (Debian package postfix)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    sbx = Sandbox.start(users=("alice", "bob"))
    memory: list[dict[str, Any]] = []
    try:
        bench = Bench(sbx, work)
        sizes = {"small": len(bench.sample(large=False)), "large": len(bench.sample(large=True))}
        print(f"sandbox up; message sizes on the wire: {sizes['small']:,} and {sizes['large']:,} bytes; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
        plain = bench.connection("smtp")

        if "loopback" in parts:
            for kind, count in (("small", args.small), ("large", args.large)):
                for _ in range(args.rounds):  # interleaved, best of the rounds
                    for c in concurrencies:
                        bench.drain()
                        bench.smtp_source(count, c, kind=kind)
                        bench.drain()
                        bench.activity(plain, count, c, large=kind == "large", transport="loopback")
        if "proxy" in parts:
            with delay_proxy(sbx.info.ports["submission"], args.delay) as port:
                proxied = bench.connection("submission", port=port)
                for kind, count, naive_count in (("small", args.small, args.naive_small),
                                                 ("large", args.large, args.naive_large)):
                    bench.drain()
                    bench.naive_loop(port, naive_count, large=kind == "large", transport="proxy")
                    for c in concurrencies:
                        bench.drain()
                        bench.activity(proxied, count, c, large=kind == "large", transport="proxy")
        if "memory" in parts:
            for count in (int(n) for n in args.memory.split(",")):
                bench.drain()
                memory.append(memory_run(bench, count, 8))
        bench.drain()
        report(bench, memory, sizes, concurrencies)
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (1 min), {os.getloadavg()[1]:.1f} (5 min)")
    finally:
        sbx.remove()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
