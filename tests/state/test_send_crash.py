"""The send ledger under real crashes: ``mailconnector send`` processes SIGKILLed mid-run and rerun, two senders on
one input at once, and an ``uncertain`` entry settled with ``mailconnector ledger``.

Why: the ledger's promise -- no Message-ID is accepted by the server twice, across kills and processes -- only
means something against real processes, a real Postfix and real stores. What the server accepted is read back
from the recipients' mailboxes (each delivered copy names its Postfix queue id in ``Received:``) and from
Postfix's own log (every queue id it accepted, delivered yet or not).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import wait_for
from faults import C2S, S2C, Cut, Fault, FaultProxy, OnPattern, Stall
from services.copies import accepted_by_postfix, delivered

from mailconnector.activities.send import SendEmail
from mailconnector.connection import Connection
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox
from mailconnector.state import Store

PW_VAR = "MC_SEND_CRASH_PASSWORD"
CONCURRENCY = 8
FINISHED = {"sent", "skipped_duplicate", "uncertain"}  # what a run that ended may report, kills behind it
_MESSAGE_ID = re.compile(rb"(?im)^message-id:\s*(<[^>\r\n]*>)")


# --------------------------------------------------------------------------------------------- helpers
@dataclass
class Project:
    """A project directory with its file, and the ``mailconnector`` processes started in it (killed at the end
    of the test if still running, so none is left behind)."""

    directory: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailconnector", *args], cwd=self.directory, env=self.env,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def start_send(self, connection: str, output: str, *, inp: str = "outbox.jsonl") -> subprocess.Popen[bytes]:
        """``send`` in the background; its stderr goes to OUTPUT.stderr (a pipe nobody reads could block it)."""
        with open(self.directory / f"{output}.stderr", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mailconnector", "send", connection, "--input", inp, "--output", output,
                 "--concurrency", str(CONCURRENCY)],
                cwd=self.directory, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        self.procs.append(proc)
        return proc

    def stderr_of(self, output: str) -> str:
        path = self.directory / f"{output}.stderr"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def responses(self, output: str) -> list[dict[str, Any]]:
        """The complete lines of a response file (a killed run may have left half a line)."""
        path = self.directory / output
        if not path.exists():
            return []
        text = path.read_text()
        return [json.loads(line) for line in text.split("\n")[:-1] if line]

    def ledger(self, *extra: str) -> list[dict[str, Any]]:
        res = self.run("ledger", "list", "--json", "--limit", "10000", *extra)
        assert res.returncode == 0, res.stderr
        entries: list[dict[str, Any]] = json.loads(res.stdout)
        return entries

    def reap(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def proxy(sandbox: Sandbox) -> Iterator[FaultProxy]:
    """A pass-through proxy to Postfix's plain ``smtp`` port (AUTH without TLS), so faults can see the data."""
    with FaultProxy(("127.0.0.1", sandbox.info.ports["smtp"])) as p:
        yield p


@contextlib.contextmanager
def make_project(sandbox: Sandbox, directory: Path, *, state: str | None = None,
                 proxy: FaultProxy | None = None) -> Iterator[Project]:
    """``mail`` sends as alice through the submission port; ``proxied`` as alice through ``proxy``. The Message-ID
    derived from a record's id depends on the account, not the connection, so both share ledger keys."""
    conns: dict[str, Any] = {"mail": sandbox.connection_dict("alice", password=f"${{env:{PW_VAR}}}")}
    if proxy is not None:
        proxied = sandbox.connection_dict("alice", smtp="smtp", password=f"${{env:{PW_VAR}}}")
        proxied["smtp"]["port"] = proxy.port
        conns["proxied"] = proxied
    data: dict[str, Any] = {"connections": conns}
    if state is not None:
        data["settings"] = {"state": state}
    (directory / "mailconnector.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("MAILCONNECTOR_PROJECT", "MAILCONNECTOR_STATE")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", PW_VAR: sandbox.info.password("alice")})
    project = Project(directory, env)
    try:
        yield project
    finally:
        project.reap()


def write_outbox(project: Project, tok: str, count: int, recipients: tuple[str, ...],
                 name: str = "outbox.jsonl") -> None:
    """``count`` small records; the run token in each id makes every Message-ID of this test unique."""
    with open(project.directory / name, "w", encoding="utf-8") as f:
        for i in range(count):
            f.write(json.dumps({"id": f"{tok}-{i}", "to": f"{recipients[i % len(recipients)]}@example.test",
                                "subject": f"crash {tok} {i}", "text": f"message {i} of run {tok}"}) + "\n")


def kill_when(project: Project, proc: subprocess.Popen[bytes], output: str, ready: Callable[[], bool],
              timeout: float = 30) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds, then reap it (a zombie's pid would still look alive to the
    rerun). Fails if the run ended by itself first: then the kill was not mid-run."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the send ended (exit {proc.returncode}) before its kill point:\n{project.stderr_of(output)}")
        if time.monotonic() > deadline:
            pytest.fail(f"kill point not reached within {timeout} s:\n{project.stderr_of(output)}")
        time.sleep(0.005)  # poll interval
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, f"the send ended by itself (exit {proc.returncode}) before the kill"


def release_together(senders: dict[Path, subprocess.Popen[bytes]], data: bytes, timeout: float = 60) -> None:
    """Give every sender its input at the same moment, however long each took to start: a FIFO opens for writing
    only once its reader has opened it (``ENXIO`` before), so when all are open, all senders wait in their read;
    then each gets ``data`` and its end of file together."""
    fds: dict[Path, int] = {}
    deadline = time.monotonic() + timeout
    try:
        while True:
            for fifo in senders.keys() - fds.keys():
                try:
                    fds[fifo] = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:  # ENXIO: its sender has not opened it yet
                        raise
            if len(fds) == len(senders):
                break
            ended = {fifo.name: p.returncode for fifo, p in senders.items() if p.poll() is not None}
            assert not ended, f"senders ended before reading their input: {ended}"
            assert time.monotonic() < deadline, f"the senders did not open their input within {timeout} s"
            time.sleep(0.01)  # poll interval
        for fd in fds.values():
            os.set_blocking(fd, True)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
    finally:
        for fd in fds.values():
            os.close(fd)


@dataclass(frozen=True)
class LedgerLook:
    sent: int
    left_claimed: frozenset[str]


def look_at_ledger(db: Path, pid: int | None = None) -> LedgerLook:
    """How many entries the server confirmed, and which claims process ``pid`` left (holder ``host:pid:...``),
    read straight from the store: ``ledger list`` would mark a dead sender's claims uncertain, and this test
    wants the rerun itself to find them."""
    if not db.exists():
        return LedgerLook(0, frozenset())
    store = Store(db)
    try:
        entries = store.ledger_entries(limit=100_000)
    finally:
        store.close()
    left = frozenset(e.message_id for e in entries
                     if e.status == "claimed" and (e.holder or "").split(":")[1:2] == [str(pid)])
    return LedgerLook(sum(e.status in ("sent", "partial") for e in entries), left)


def assert_no_duplicates(box: dict[str, list[str | None]], log: dict[str, set[str]], mids: set[str]) -> None:
    """No Message-ID of this test was accepted by Postfix twice: at most one queue id, in the mailbox and in the
    log (Postfix delivering one queue id twice would not be the sender's duplicate)."""
    assert box.keys() <= mids, f"messages of this run with unknown Message-IDs: {box.keys() - mids}"
    assert None not in {q for qids in box.values() for q in qids}, "a copy without Postfix's Received header"
    twice = {mid: sorted(set(q for q in qids if q)) for mid, qids in box.items() if len(set(qids)) > 1}
    assert not twice, f"accepted by Postfix more than once (mailbox): {twice}"
    twice_log = {mid: sorted(qids) for mid, qids in log.items() if len(qids) > 1}
    assert not twice_log, f"accepted by Postfix more than once (log): {twice_log}"


def last_message_id(transcript: bytes) -> str:
    found = _MESSAGE_ID.findall(transcript)
    assert found, "no message data on the stalled connection"
    return found[-1].decode("ascii")


# ----------------------------------------------------------------------------------------------- tests
def test_sigkill_mid_run_then_rerun_never_sends_twice(sandbox: Sandbox, proxy: FaultProxy, tmp_path: Path) -> None:
    """Four SIGKILLs at different points of a 300-message run (one while a message's final dot is written and
    Postfix's 250 is held back by the proxy), then reruns: nothing is accepted twice, nothing fails, and what is
    not in a mailbox is ``uncertain`` -- exactly the claims the killed senders left, at most one per worker."""
    users = ("bob", "carol")
    total = 300
    tok = uuid.uuid4().hex[:12]
    with make_project(sandbox, tmp_path, proxy=proxy) as project:
        write_outbox(project, tok, total, users)
        db = project.directory / ".mailconnector" / "state.db"
        all_responses: list[dict[str, Any]] = []
        left_claimed: set[str] = set()  # what the killed senders held: the only candidates for "uncertain"
        stalled_mid: str | None = None

        def sent_lines(output: str) -> int:
            return sum(r["status"] == "sent" for r in project.responses(output))

        # Round by round: (connection, when to kill). Counts are of this run's own "sent" lines.
        for round_no, (connection, threshold) in enumerate(
                [("mail", 20), ("proxied", None), ("mail", 1), ("mail", 40)]):
            output = f"run{round_no}.jsonl"
            before = look_at_ledger(db).sent
            if threshold is None:
                # The 16th end-of-data reply of this run is held back: Postfix has queued that message (it said
                # "250 ... queued as"), the sender has written the final dot and waits for the answer, and stays
                # so (the connection is stalled) until the kill, once this run has recorded a message sent.
                hold = proxy.add(Fault(OnPattern(b"Ok: queued as", before=True), Stall(), direction=S2C, skip=15))
                proc = project.start_send(connection, output)
                kill_when(project, proc, output, lambda h=hold, o=output: h.fired >= 1 and sent_lines(o) >= 1)
                [stalled] = [c for c in proxy.connections if hold in c.fired]
                stalled_mid = last_message_id(bytes(stalled.received[C2S]))
                proxy.clear()
                assert stalled_mid in look_at_ledger(db, proc.pid).left_claimed
            else:
                proc = project.start_send(connection, output)
                kill_when(project, proc, output, lambda o=output, n=threshold: sent_lines(o) >= n)
            after = look_at_ledger(db, proc.pid)
            assert before < after.sent < total, f"round {round_no}: not killed mid-run ({before} -> {after.sent} sent)"
            # At most one claim per worker thread: ``concurrency`` connections, plus the extra worker, which may
            # have handed its connection back and not yet recorded the server's answer.
            assert len(after.left_claimed) <= CONCURRENCY + 1, f"round {round_no}: {sorted(after.left_claimed)}"
            left_claimed |= after.left_claimed
            all_responses += project.responses(output)

        # Rerun the same input until a run finishes.
        for attempt in range(3):
            output = f"final{attempt}.jsonl"
            res = project.run("send", "mail", "--input", "outbox.jsonl", "--output", output,
                              "--concurrency", str(CONCURRENCY))
            final = project.responses(output)
            all_responses += final
            statuses = Counter(r["status"] for r in final)
            if res.returncode == 0 or (res.returncode == 1 and set(statuses) <= FINISHED):
                break
        else:
            pytest.fail(f"no rerun finished: exit {res.returncode}, {dict(statuses)}\n{res.stderr[-3000:]}")
        assert len(final) == total and sorted(r["index"] for r in final) == list(range(total))
        mids = {r["message_id"] for r in final}
        assert len(mids) == total
        uncertain = {e["message_id"] for e in project.ledger("--status", "uncertain")}

        # What Postfix accepted: nothing twice, and what is not delivered is uncertain. The stalled message (killed
        # between its final dot and Postfix's 250) was delivered, and is uncertain: never sent again.
        box, log = delivered(sandbox, users, tok, mids, must=mids - uncertain)
        assert_no_duplicates(box, log, mids)
        missing = mids - box.keys()
        assert missing <= uncertain, f"neither delivered nor uncertain: {sorted(missing - uncertain)}"
        assert stalled_mid in box and stalled_mid in uncertain
        assert not [r for r in all_responses if r["status"] == "failed"], "a record failed"

        # The ledger knows every record, each either sent or uncertain (nothing is left claimed), and the
        # uncertain ones are exactly the claims the killed senders left; the final run reported each uncertain.
        ledger = {e["message_id"]: e for e in project.ledger()}
        assert ledger.keys() == mids
        assert {e["status"] for e in ledger.values()} <= {"sent", "uncertain"}
        assert uncertain == {mid for mid, e in ledger.items() if e["status"] == "uncertain"}
        assert uncertain == left_claimed
        reported = {r["message_id"] for r in final if r["status"] == "uncertain"}
        assert reported == uncertain, "the final run must report exactly the uncertain ones as uncertain"
        assert res.returncode == (1 if uncertain else 0)

        # One more rerun sends nothing at all.
        res = project.run("send", "mail", "--input", "outbox.jsonl", "--output", "again.jsonl")
        again = Counter(r["status"] for r in project.responses("again.jsonl"))
        assert again == Counter({"skipped_duplicate": total - len(uncertain), "uncertain": len(uncertain)})
        assert res.returncode == 1


@pytest.mark.parametrize("store", ["postgres", "sqlite"])
def test_two_senders_on_one_ledger_send_each_message_once(sandbox: Sandbox, tmp_path: Path, store: str,
                                                         request: pytest.FixtureRequest) -> None:
    """Two ``send`` processes on the same input and one shared ledger, let go at the same moment (each reads the
    input from a FIFO written only once both wait on theirs): each record is sent by exactly one and skipped as a
    duplicate by the other, and each Message-ID arrives once."""
    users = ("carol", "dave")
    total = 200
    tok = uuid.uuid4().hex[:12]
    # SQLite: the default store, .mailconnector/state.db beside the project file.
    state = request.getfixturevalue("postgres_url") if store == "postgres" else None
    with make_project(sandbox, tmp_path, state=state) as project:
        write_outbox(project, tok, total, users)
        fifos = [project.directory / f"sender{n}.in.jsonl" for n in (0, 1)]
        for fifo in fifos:
            os.mkfifo(fifo)
        procs = [project.start_send("mail", f"sender{n}.jsonl", inp=fifos[n].name) for n in (0, 1)]
        release_together(dict(zip(fifos, procs, strict=True)), (project.directory / "outbox.jsonl").read_bytes())
        codes = [p.wait(timeout=60) for p in procs]
        assert codes == [0, 0], [project.stderr_of(f"sender{n}.jsonl") for n in (0, 1)]
        runs = [{r["index"]: r for r in project.responses(f"sender{n}.jsonl")} for n in (0, 1)]
        assert [sorted(run) for run in runs] == [list(range(total))] * 2
        mids = {r["message_id"] for r in runs[0].values()}
        assert mids == {r["message_id"] for r in runs[1].values()} and len(mids) == total

        box, log = delivered(sandbox, users, tok, mids, must=mids)
        assert_no_duplicates(box, log, mids)
        assert {mid: len(qids) for mid, qids in box.items()} == dict.fromkeys(mids, 1)

        # The two really ran at the same time: one found records the other was sending right then, or both sent.
        busy = sum("right now" in (r.get("error") or {}).get("message", "") for run in runs for r in run.values())
        sent_by = [sum(r["status"] == "sent" for r in run.values()) for run in runs]
        assert busy or min(sent_by) > 0, f"the two senders did not overlap: sent {sent_by}"
        pairs = Counter(tuple(sorted((runs[0][i]["status"], runs[1][i]["status"]))) for i in range(total))
        assert pairs == Counter({("sent", "skipped_duplicate"): total}), pairs
        ledger = project.ledger()
        assert {e["message_id"] for e in ledger} == mids and {e["status"] for e in ledger} == {"sent"}


def test_ledger_list_and_resolve_an_uncertain_send(sandbox: Sandbox, proxy: FaultProxy, tmp_path: Path) -> None:
    """A connection lost right after the final dot was written leaves the message ``uncertain``: listed, reported
    and never sent by a rerun, until ``ledger resolve --not-sent``; then the next rerun sends it once."""
    tok = uuid.uuid4().hex[:12]
    bob = Connection.from_dict(sandbox.connection_dict("bob"), name="crash-check-bob")

    def count(subject: str) -> int:
        with ImapSession(bob) as imap:
            imap.select("INBOX", readonly=True)
            return len(imap.search(["SUBJECT", subject]))

    def never_arrived(mid: str) -> None:
        """Nothing of ``tok`` arrived: a message sent after everything else (with no ledger: this project's
        holds only the test's entries) has arrived, and Postfix's log shows no acceptance of ``mid``."""
        sentinel = f"sentinel {uuid.uuid4().hex}"
        alice = Connection.from_dict(sandbox.connection_dict("alice"), name="crash-sentinel")
        response = SendEmail(alice).send_one({"to": "bob@example.test", "subject": sentinel, "text": "after"})
        assert response.status == "sent", response
        wait_for(lambda: count(sentinel) == 1, timeout=20, interval=0.1)
        assert count(tok) == 0
        assert accepted_by_postfix(sandbox, {mid}) == {}

    with make_project(sandbox, tmp_path, proxy=proxy) as project:
        (project.directory / "one.jsonl").write_text(json.dumps(
            {"id": f"{tok}-only", "to": "bob@example.test", "subject": f"crash {tok}", "text": "once"}) + "\n")
        # The proxy cuts both sides just before the final dot would reach Postfix: the sender has written it and
        # sees the connection drop while waiting for the answer; Postfix never got the whole message.
        cut = proxy.add(Fault(OnPattern(b"\r\n.\r\n", before=True), Cut(), direction=C2S))
        res = project.run("send", "proxied", "--input", "one.jsonl", "--output", "first.jsonl")
        assert cut.fired == 1
        assert res.returncode == 1, res.stderr
        [first] = project.responses("first.jsonl")
        assert first["status"] == "uncertain", first
        mid = first["message_id"]
        assert mid.startswith("<") and mid.endswith(">")

        [entry] = project.ledger("--status", "uncertain")
        assert entry["message_id"] == mid and entry["status"] == "uncertain"
        assert entry["recipients"] == ["bob@example.test"]

        # A rerun (straight to Postfix now) reports it uncertain and does not send it.
        res = project.run("send", "mail", "--input", "one.jsonl", "--output", "second.jsonl")
        assert res.returncode == 1, res.stderr
        [second] = project.responses("second.jsonl")
        assert (second["status"], second["message_id"]) == ("uncertain", mid)
        assert "ledger resolve" in second["error"]["hint"]
        never_arrived(mid)

        # Usage errors: no flag, or both flags -> exit 2; nothing changes.
        for flags in ((), ("--sent", "--not-sent")):
            res = project.run("ledger", "resolve", mid, *flags)
            assert res.returncode == 2, res.stderr
            assert "--sent" in res.stderr and "--not-sent" in res.stderr
        # A Message-ID the ledger does not know -> exit 8 (state error), naming it.
        unknown = f"<{uuid.uuid4().hex}@example.test>"
        res = project.run("ledger", "resolve", unknown, "--not-sent")
        assert res.returncode == 8, res.stderr
        assert f"{unknown} is not in the send ledger" in " ".join(res.stderr.split())
        assert [e["status"] for e in project.ledger()] == ["uncertain"]

        # Resolved as not sent (angle brackets optional): forgotten, and the next rerun sends it, once.
        res = project.run("ledger", "resolve", mid.strip("<>"), "--not-sent")
        assert res.returncode == 0, res.stderr
        assert project.ledger() == []
        res = project.run("send", "mail", "--input", "one.jsonl", "--output", "third.jsonl")
        assert res.returncode == 0, res.stderr
        [third] = project.responses("third.jsonl")
        assert (third["status"], third["message_id"]) == ("sent", mid)
        box, log = delivered(sandbox, ("bob",), tok, {mid}, must={mid})
        assert_no_duplicates(box, log, {mid})
        assert len(box[mid]) == 1
        [entry] = project.ledger()
        assert entry["status"] == "sent"

        # A sent entry is not uncertain: resolving it is refused (exit 8), and a rerun skips it.
        res = project.run("ledger", "resolve", mid, "--not-sent")
        assert res.returncode == 8 and "not uncertain" in " ".join(res.stderr.split()), res.stderr
        res = project.run("send", "mail", "--input", "one.jsonl", "--output", "fourth.jsonl")
        assert res.returncode == 0, res.stderr
        assert [r["status"] for r in project.responses("fourth.jsonl")] == ["skipped_duplicate"]
