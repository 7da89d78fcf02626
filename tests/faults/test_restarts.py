"""Server restarts in the middle of long runs: Postfix and Dovecot stopped and started again under load.

These tests restart servers, so they use a sandbox of their own (module-scoped): the session's sandbox is
shared by every other test. The promise checked: each run either finishes, or fails with a retryable error
and a rerun finishes; every message is delivered exactly once, counted by Message-ID in the mailbox (send)
or in what was taken downstream (read). A message whose send was cut after its final dot is reported as
"may have been delivered" and is then allowed at most once (never twice).

What the connector promises is that it never *submits* a message twice; that is counted in Postfix's log
(each accepted submission gets its own queue id). Postfix and Dovecot between them deliver at least once: a
restart of either that cuts an LMTP delivery after Dovecot saved the message but before Postfix recorded it
makes Postfix deliver that queue file again (seen here in most runs, for one or two messages). Such a second
copy comes from a single accepted submission, so the test tells it apart and asserts that every extra copy in
the mailbox is of that kind; the connector cannot see or prevent it.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from mailconnector.activities.read import ReadEmail
from mailconnector.activities.send import SendEmail
from mailconnector.connection import Connection
from mailconnector.errors import MailConnectorError, TransportError
from mailconnector.imap import ImapSession
from mailconnector.records.send import SendResponse
from mailconnector.sandbox import Sandbox
from mailconnector.state import Store

SEND_COUNT = 40
READ_COUNT = 60


@pytest.fixture(scope="module")
def own_sandbox() -> Iterator[Sandbox]:
    sbx = Sandbox.start(users=("alice", "bob"))
    try:
        yield sbx
    finally:
        sbx.remove()


def conn(sbx: Sandbox, user: str = "alice", **top: Any) -> Connection:
    data = sbx.connection_dict(user)
    data["timeouts"] = {"connect": 2, "command": 3}
    data.update(top)
    return Connection.from_dict(data, name=f"restart-{user}")


def message_ids_in(sbx: Sandbox, user: str, folder: str = "INBOX") -> list[str]:
    with ImapSession(conn(sbx, user)) as imap:
        imap.select(folder, readonly=True)
        uids = imap.search(["ALL"])
        return [_message_id(m.raw) for m in imap.fetch(uids)]


def _message_id(raw: bytes) -> str:
    for line in raw.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    return ""


def flush_queue(sbx: Sandbox) -> None:
    """Ask Postfix to retry deferred mail now (after Dovecot was down, LMTP deliveries were deferred)."""
    subprocess.run(["/usr/sbin/postqueue", "-c", str(Path(sbx.info.rundir) / "postfix"), "-f"],
                   capture_output=True, check=False, timeout=30)


_ACCEPTED = re.compile(r"postfix/qmgr\[\d+\]: ([0-9A-F]+): from=.*\(queue active\)")
_MESSAGE_ID = re.compile(r"postfix/cleanup\[\d+\]: ([0-9A-F]+): message-id=(<[^>]*>)")


def postfix_log(sbx: Sandbox) -> dict[str, set[str]]:
    """Message-ID -> queue ids of the submissions Postfix accepted (one per accepted DATA)."""
    text = (Path(sbx.info.rundir) / "postfix.log").read_text(errors="replace")
    ids = {m.group(1): m.group(2) for m in _MESSAGE_ID.finditer(text)}
    accepted: dict[str, set[str]] = {}
    for m in _ACCEPTED.finditer(text):
        if m.group(1) in ids:
            accepted.setdefault(ids[m.group(1)], set()).add(m.group(1))
    return accepted


def send_run(sbx: Sandbox, records: list[dict[str, Any]], store: Store,
             on_progress: Any = None) -> list[SendResponse]:
    activity = SendEmail(conn(sbx), store=store, concurrency=2, rate_limit=25, retries=6, backoff=0.2,
                         max_backoff=1.0)
    out = []
    for response in activity.send(records):
        out.append(response)
        if on_progress is not None:
            on_progress(len(out))
    return sorted(out, key=lambda r: r.index)


@pytest.mark.parametrize("server", ["postfix", "dovecot"])
def test_a_restart_in_the_middle_of_a_long_send_run(own_sandbox: Sandbox, tmp_path: Path, server: str) -> None:
    token = uuid.uuid4().hex[:10]
    records = [{"id": f"{token}-{i}", "to": "bob@example.test", "subject": f"restart {token} {i}",
                "text": f"message {i}"} for i in range(SEND_COUNT)]
    store = Store(tmp_path / "state.db")
    restart = threading.Thread(target=own_sandbox.restart, args=(server,), daemon=True)

    def maybe_restart(done: int) -> None:
        if done == SEND_COUNT // 3 and restart.ident is None:
            restart.start()  # while the other connection is in the middle of a message

    responses = send_run(own_sandbox, records, store, maybe_restart)
    assert restart.ident is not None
    restart.join(30)
    assert own_sandbox.running()
    for r in responses:
        assert r.status in ("sent", "failed", "uncertain"), r
        if r.status in ("failed", "uncertain"):
            assert r.error is not None and (r.error.retryable or r.error.type == "MayHaveBeenDelivered"), r.error
    # A rerun finishes the job: what failed retryably is sent now, nothing is sent twice.
    again = send_run(own_sandbox, records, store)
    uncertain = {r.message_id for r in responses if r.error is not None and r.error.type == "MayHaveBeenDelivered"}
    for r in again:
        assert r.status in ("sent", "skipped_duplicate"), r
    sent_ids = {r.message_id for r in responses + again if r.status == "sent"}
    assert len(sent_ids) + len(uncertain) == SEND_COUNT
    if server == "dovecot":
        flush_queue(own_sandbox)

    def delivered() -> list[str]:
        ours = {r.message_id for r in responses}
        return [m for m in message_ids_in(own_sandbox, "bob") if m in ours]

    wait_for(lambda: set(delivered()) >= sent_ids, timeout=30, interval=0.3)
    time.sleep(0.5)  # a duplicate would arrive close behind its first copy
    got = delivered()
    assert set(got) - sent_ids <= uncertain
    accepted = postfix_log(own_sandbox)
    # The connector submitted every message at most once (exactly once when it reported it sent).
    for mid in sent_ids | uncertain:
        assert len(accepted.get(mid, ())) <= 1, f"{mid} submitted twice: queue ids {accepted[mid]}"
    for mid in sent_ids:
        assert len(accepted.get(mid, ())) == 1, f"{mid} reported sent but not accepted"
    # Any extra copy in the mailbox is Postfix delivering its one accepted queue file again: a restart cut its
    # LMTP delivery after Dovecot had saved the message but before the outcome was recorded.
    for mid in {m for m in got if got.count(m) > 1}:
        assert len(accepted[mid]) == 1, (mid, accepted[mid])


def test_a_dovecot_restart_in_the_middle_of_a_long_read_run(own_sandbox: Sandbox, tmp_path: Path) -> None:
    folder = f"restart-{uuid.uuid4().hex[:8]}"
    ids = []
    with ImapSession(conn(own_sandbox)) as imap:
        imap.create_folder(folder)
        for i in range(READ_COUNT):
            mid = f"<read-restart-{i}-{uuid.uuid4().hex[:8]}@example.test>"
            imap.append(folder, f"Message-ID: {mid}\r\nSubject: r{i}\r\n\r\nbody {i}\r\n".encode())
            ids.append(mid)
    store = Store(tmp_path / "state.db")
    reader_conn = conn(own_sandbox, activities="read")
    taken: list[str] = []
    errors: list[MailConnectorError] = []
    restarted = False
    for _run in range(4):
        try:
            with ReadEmail(reader_conn, store=store, folder=folder, batch_size=5) as reader:
                for item in reader:
                    assert item.record.message_id is not None
                    taken.append(item.record.message_id)
                    item.ack()
                    if len(taken) == READ_COUNT // 3 and not restarted:
                        restarted = True
                        own_sandbox.restart("dovecot")
            break
        except MailConnectorError as exc:
            assert isinstance(exc, TransportError) and exc.retryable, exc
            errors.append(exc)
            wait_for(lambda: own_sandbox.running(), timeout=15)
    else:
        pytest.fail(f"the reader did not finish in 4 runs: {errors}")
    assert restarted
    assert sorted(taken) == sorted(ids), "every message taken exactly once"
    with ImapSession(conn(own_sandbox)) as imap:
        imap.select(folder, readonly=True)
        assert len(imap.search(["UNSEEN"])) == 0, "every taken message marked read"
