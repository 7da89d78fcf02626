"""Watch mode against the real sandbox: IDLE wake-ups, polling, one consumer per folder (the lease: a second
watcher fails with exit code 8 or waits and takes over), and a connection dropped while mail arrives."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from ops_support import append_messages, jsonl, make_message, read_state, write_project

from mailconnector.connection import Connection
from mailconnector.imap import ImapSession
from mailconnector.operations import RunResult, watch_operation
from mailconnector.project import Project
from mailconnector.sandbox import Sandbox

BIN = Path(sys.executable).parent / "mailconnector"
DEBUG = ("--debug",) if os.environ.get("MC_WATCH_DEBUG") else ()

PASS = '''\
import time

def passthrough(record):
    if "slow" in record["subject"]:
        time.sleep(0.3)
    return {"subject": record["subject"], "uid": record["uid"]}
'''


def watch_project(tmp_path: Path, sandbox: Sandbox, folder: str, *, user: str = "erin", out: str = "out.jsonl",
                  name: str = "mailconnector.yaml", settings: dict[str, Any] | None = None,
                  interval: float = 300) -> Project:
    module = f"watch_tx_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(PASS)
    activities = {"box": {"type": "read-email", "connection": "mbox", "folder": folder},
                  "out": {"type": "file", "path": out}}
    operations = {"watch": {"source": "box", "target": "out", "transformation": f"{module}:passthrough",
                            "interval": interval}}
    path = write_project(tmp_path / name, sandbox, {"mbox": user}, activities, operations, settings)
    return Project.load(path)


class Watcher:
    """``watch_operation`` in a thread; any exception it ends with is kept for the test to see."""

    def __init__(self, project: Project, **kwargs: Any) -> None:
        self.stop = threading.Event()
        self.runs: list[RunResult] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, args=(project, kwargs), daemon=True)

    def _main(self, project: Project, kwargs: dict[str, Any]) -> None:
        try:
            watch_operation(project, "watch", stop=self.stop, on_run=self.runs.append, **kwargs)
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Watcher:
        self.thread.start()
        wait_for(lambda: self.runs or self.error, timeout=30)
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the watcher did not stop"
        assert self.error is None, self.error


def lease_of(project: Project, folder: str) -> str:
    from mailconnector.activities.read import ReadEmail

    return ReadEmail(project.connection("mbox"), folder=folder).lease_name


def subjects(path: Path) -> list[str]:
    return [r["subject"] for r in jsonl(path)]


# ------------------------------------------------------------------------------------------------- IDLE
def test_idle_picks_up_a_new_message_within_seconds(sandbox: Sandbox, tmp_path: Path,
                                                    make_conn: Callable[..., Connection],
                                                    fresh_folder: Callable[[str], str]) -> None:
    folder = fresh_folder("erin")
    conn = make_conn("erin")
    project = watch_project(tmp_path, sandbox, folder, interval=300)  # a poll would take 5 minutes
    out = tmp_path / "out.jsonl"
    with Watcher(project) as watcher:
        assert watcher.runs[0].read == 0
        time.sleep(0.5)  # the watcher is now idling
        for n in range(2):
            started = time.monotonic()
            append_messages(conn, folder, [f"idle {n}"])
            wait_for(lambda n=n: len(subjects(out)) == n + 1, timeout=10, interval=0.02)
            assert time.monotonic() - started < 2.5
    assert subjects(out) == ["idle 0", "idle 1"]  # a watch appends after its first run
    assert all(read_state(conn, folder).values())
    # No empty runs in between: each wake-up came from IDLE, not a timer.
    assert [r.read for r in watcher.runs if r.read] == [1, 1]
    # The operation log keeps the runs that found mail, not the watch's empty ones.
    logged = project.store().list_runs()
    assert [(r["status"], r["records_read"]) for r in logged] == [("success", 1), ("success", 1)]
    # Stopped cleanly: its lease was given back, so the health view has nothing to flag (nor to show).
    from mailconnector.console._views import health

    assert health(project.store()) == []


def test_mail_arriving_during_a_run_is_not_left_until_the_next_wake_up(
        sandbox: Sandbox, tmp_path: Path, make_conn: Callable[..., Connection],
        fresh_folder: Callable[[str], str]) -> None:
    folder = fresh_folder("erin")
    conn = make_conn("erin")
    project = watch_project(tmp_path, sandbox, folder, interval=300)
    out = tmp_path / "out.jsonl"
    with Watcher(project):
        append_messages(conn, folder, [f"slow {i}" for i in range(4)])
        wait_for(lambda: len(subjects(out)) >= 1, timeout=10, interval=0.02)
        # The run in progress searched before this arrived; IDLE would not report it (it is already there
        # when IDLE starts), so the watcher must notice it moved UIDNEXT and run again at once.
        append_messages(conn, folder, ["late"])
        wait_for(lambda: "late" in subjects(out), timeout=5)
    assert sorted(subjects(out)) == sorted(["late", *(f"slow {i}" for i in range(4))])


def test_polling_when_the_server_offers_no_idle(sandbox: Sandbox, tmp_path: Path,
                                                make_conn: Callable[..., Connection],
                                                fresh_folder: Callable[[str], str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Dovecot always offers IDLE; hide it from the watcher (our own wrapper, not the protocol library).
    real = ImapSession.has_capability
    monkeypatch.setattr(ImapSession, "has_capability", lambda self, name: name != "IDLE" and real(self, name))
    folder = fresh_folder("erin")
    conn = make_conn("erin")
    project = watch_project(tmp_path, sandbox, folder, interval=0.4)
    out = tmp_path / "out.jsonl"
    with Watcher(project) as watcher:
        wait_for(lambda: len(watcher.runs) >= 3, timeout=10)  # a run every interval, mail or not
        append_messages(conn, folder, ["polled"])
        started = time.monotonic()
        wait_for(lambda: subjects(out) == ["polled"], timeout=5, interval=0.02)
        assert time.monotonic() - started < 2.0
    assert read_state(conn, folder) == {"polled": True}


# -------------------------------------------------------------------------------- one consumer per folder
def start_cli(project: Path, *args: str, name: str) -> subprocess.Popen[bytes]:
    """A watcher as its own process; its stdout and stderr go to NAME.out / NAME.err beside the project
    (files, not pipes: a long-running process must never block on a full pipe)."""
    env = dict(os.environ, COLUMNS="200")
    with open(project.parent / f"{name}.out", "wb") as out, open(project.parent / f"{name}.err", "wb") as err:
        return subprocess.Popen([str(BIN), "run", "watch", "--project", str(project), "--watch", *args],
                                cwd=project.parent, env=env, stdout=out, stderr=err)


def stderr_of(proc: subprocess.Popen[bytes], tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.err").read_text()


def wait_explained(predicate: Callable[[], Any], timeout: float, explain: Callable[[], str]) -> None:
    try:
        wait_for(predicate, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the watcher said:\n{explain()}") from None


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def test_two_watchers_on_one_folder_process_each_message_exactly_once(
        sandbox: Sandbox, tmp_path: Path, make_conn: Callable[..., Connection],
        fresh_folder: Callable[[str], str], processes: list[subprocess.Popen[bytes]]) -> None:
    folder = fresh_folder("erin")
    conn = make_conn("erin")
    settings = {"lease_seconds": 4}
    # Two project files in one directory share the state store (as two machines sharing it would), and
    # write to files of their own.
    first = watch_project(tmp_path, sandbox, folder, out="out-a.jsonl", settings=settings)
    second = watch_project(tmp_path, sandbox, folder, out="out-b.jsonl", name="second.yaml", settings=settings)
    lease = lease_of(first, folder)
    store = first.store()

    a = start_cli(first.path, "--interval", "0.5", name="a")
    processes.append(a)
    wait_for(lambda: store.lease_info(lease) is not None, timeout=30)

    refused = start_cli(second.path, name="refused")
    processes.append(refused)
    refused.wait(timeout=30)
    err = stderr_of(refused, tmp_path, "refused")
    assert refused.returncode == 8, err
    assert f"{lease.split(':', 1)[1]} is being processed by another run" in " ".join(err.split())

    b = start_cli(second.path, "--wait", name="b")
    processes.append(b)
    names = [f"msg {i:03d}" for i in range(200)]

    def deliver() -> None:  # 200 arrivals over a couple of seconds, in groups of 10
        for start in range(0, len(names), 10):
            append_messages(conn, folder, names[start:start + 10])
            time.sleep(0.05)

    sender = threading.Thread(target=deliver)
    sender.start()
    wait_for(lambda: len(jsonl(tmp_path / "out-a.jsonl")) >= 60, timeout=60)
    assert b.poll() is None, "the second watcher waits instead of exiting"
    a.send_signal(signal.SIGTERM)
    a.wait(timeout=20)
    assert a.returncode == 0, stderr_of(a, tmp_path, "a")
    sender.join(30)
    wait_for(lambda: len(jsonl(tmp_path / "out-a.jsonl")) + len(jsonl(tmp_path / "out-b.jsonl")) >= 200,
             timeout=60)
    time.sleep(0.5)
    b.send_signal(signal.SIGTERM)
    b.wait(timeout=20)
    assert b.returncode == 0, stderr_of(b, tmp_path, "b")
    got_a, got_b = subjects(tmp_path / "out-a.jsonl"), subjects(tmp_path / "out-b.jsonl")
    assert got_a and got_b, "both watchers processed messages (the second took over)"
    assert sorted(got_a + got_b) == names  # each exactly once
    assert all(read_state(conn, folder).values())
    assert store.lease_info(lease) is None  # released by the last one


def test_a_killed_watcher_is_replaced_without_waiting_out_its_lease(
        sandbox: Sandbox, tmp_path: Path, make_conn: Callable[..., Connection],
        fresh_folder: Callable[[str], str], processes: list[subprocess.Popen[bytes]]) -> None:
    folder = fresh_folder("erin")
    conn = make_conn("erin")
    settings = {"lease_seconds": 3}
    first = watch_project(tmp_path, sandbox, folder, out="out-a.jsonl", settings=settings)
    second = watch_project(tmp_path, sandbox, folder, out="out-b.jsonl", name="second.yaml", settings=settings)
    store = first.store()
    a = start_cli(first.path, *DEBUG, name="a")
    processes.append(a)
    wait_for(lambda: store.lease_info(lease_of(first, folder)) is not None, timeout=30)
    b = start_cli(second.path, "--wait", *DEBUG, name="b")
    processes.append(b)
    append_messages(conn, folder, ["before 1", "before 2"])
    wait_explained(lambda: len(jsonl(tmp_path / "out-a.jsonl")) == 2, 30, lambda: stderr_of(a, tmp_path, "a"))
    time.sleep(0.3)
    a.kill()  # no chance to release the lease
    a.wait(timeout=10)
    killed = time.monotonic()
    append_messages(conn, folder, ["after 1", "after 2"])
    wait_for(lambda: len(jsonl(tmp_path / "out-b.jsonl")) == 2, timeout=30, interval=0.05)
    took = time.monotonic() - killed
    # Its process is gone from this host, so the waiting watcher takes over at its next look (every 0.75 s
    # here), well before the 3 s lease would run out; from another host it would wait for that.
    assert took < 3 + 8, f"took over after {took:.1f} s"
    assert subjects(tmp_path / "out-a.jsonl") == ["before 1", "before 2"]
    assert sorted(subjects(tmp_path / "out-b.jsonl")) == ["after 1", "after 2"]


def test_a_watchers_polls_are_noted_and_the_health_view_flags_it_once_killed(
        sandbox: Sandbox, tmp_path: Path, fresh_folder: Callable[[str], str],
        processes: list[subprocess.Popen[bytes]]) -> None:
    from mailconnector.console._views import health

    folder = fresh_folder("erin")
    project = watch_project(tmp_path, sandbox, folder, settings={"lease_seconds": 3})  # IDLE re-issued each 1 s
    store = project.store()
    watcher = start_cli(project.path, *DEBUG, name="a")
    processes.append(watcher)
    lease = lease_of(project, folder)

    def polls() -> list[float]:
        info = store.lease_info(lease)
        return [info.polled_at] if info is not None and info.polled_at is not None else []

    first = wait_for(polls, timeout=30)[0]
    wait_for(lambda: polls() and polls()[0] > first, timeout=10)  # each IDLE round notes a poll
    [alive] = [h for h in health(store) if h["name"] == lease]
    assert alive["state"] == "held" and alive["flag"] is None and alive["seconds_since_poll"] < 5
    watcher.kill()  # no chance to give the lease back
    watcher.wait(timeout=10)
    silent = wait_for(lambda: [h for h in health(store) if h["name"] == lease and h["flag"]], timeout=10)[0]
    assert silent["state"] == "ended" and silent["flag"].startswith("silent")


# ------------------------------------------------------------------------------- a dropped connection
@pytest.fixture
def own_sandbox() -> Iterator[Sandbox]:
    """A sandbox of this test's own: its Dovecot is stopped and restarted under the watcher."""
    sbx = Sandbox.start(users=("alice",))
    try:
        yield sbx
    finally:
        sbx.remove()


def deliver_to_maildir(sandbox: Sandbox, user: str, subject: str) -> None:
    """Deliver as a local delivery agent does (write in tmp/, rename into new/): works while Dovecot is down."""
    maildir = sandbox.maildir(user)
    owner = maildir.stat()
    name = f"{time.time():.6f}.{uuid.uuid4().hex}.sandbox"
    tmp = maildir / "tmp" / name
    tmp.write_bytes(make_message(subject, to=f"{user}@example.test"))
    os.chown(tmp, owner.st_uid, owner.st_gid)
    os.rename(tmp, maildir / "new" / name)


def test_a_dropped_connection_loses_nothing_that_arrives_meanwhile(own_sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox = own_sandbox
    project = watch_project(tmp_path, sandbox, "INBOX", user="alice", interval=300)
    conn = Connection.from_dict(sandbox.connection_dict("alice"), name="alice")
    out = tmp_path / "out.jsonl"
    with Watcher(project) as watcher:
        append_messages(conn, "INBOX", ["first 1", "first 2"])
        wait_for(lambda: len(subjects(out)) == 2, timeout=10)
        # Dovecot goes away (its IDLE connection with it); mail keeps arriving meanwhile.
        dovecot = sandbox.info.pids["dovecot"]
        os.killpg(dovecot, signal.SIGKILL)
        wait_for(lambda: not _alive(dovecot), timeout=10)
        for i in range(3):
            deliver_to_maildir(sandbox, "alice", f"during {i}")
        time.sleep(1.5)  # the watcher notices and retries (and fails) while the server is down
        sandbox.restart("dovecot")
        append_messages(conn, "INBOX", ["after 1"])
        wait_for(lambda: len(subjects(out)) == 6, timeout=20)
        time.sleep(0.5)
    assert sorted(subjects(out)) == sorted(["first 1", "first 2", "during 0", "during 1", "during 2", "after 1"])
    assert all(read_state(conn, "INBOX").values())
    assert watcher.error is None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False

