"""Triggered operations on real workers: a `trigger: watch` taken over when its worker is SIGKILLed, and a
`trigger: {every: N}` run by one of two workers at a time; every new mail taken, none twice."""

from __future__ import annotations

import json
import time
from collections import Counter
from email.message import EmailMessage
from email.utils import make_msgid

import yaml
from services.cluster import Cluster, Worker

from mailconnector.connection import Connection
from mailconnector.imap import ImapSession
from mailconnector.sandbox import Sandbox
from mailconnector.state import Store

USER = "frank"


def _setup(cluster: Cluster, sandbox: Sandbox, folder: str, trigger: object) -> None:
    doc = yaml.safe_load(cluster.path.read_text())
    doc["connections"]["inbox"] = sandbox.connection_dict(USER)
    doc["activities"]["folder"] = {"type": "read-email", "connection": "inbox", "folder": folder}
    doc["activities"]["taken"] = {"type": "file", "path": "taken.jsonl"}
    doc["operations"]["take"] = {"source": "folder", "target": "taken", "trigger": trigger, "interval": 1}
    cluster.path.write_text(yaml.safe_dump(doc))


def _append(sandbox: Sandbox, folder: str, tag: str, count: int) -> list[str]:
    ids = []
    with ImapSession(Connection.from_dict(sandbox.connection_dict(USER), name="append")) as imap:
        for i in range(count):
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "someone@example.test", f"{USER}@example.test", f"{tag} {i}"
            msg["Message-ID"] = make_msgid(domain="trigger.example.test")
            msg.set_content(f"message {i} of {tag}")
            imap.append(folder, msg.as_bytes())
            ids.append(str(msg["Message-ID"]))
    return ids


def _taken(cluster: Cluster) -> list[str]:
    path = cluster.directory / "taken.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["message_id"] for line in path.read_text().splitlines() if line.endswith("}")]


def _wait_taken(cluster: Cluster, count: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(taken := _taken(cluster)) < count:
        logs = "\n".join(w.text()[-1500:] for w in cluster.workers)
        assert time.monotonic() < deadline, f"{len(taken)} of {count} taken\n{logs}"
        time.sleep(0.1)  # poll interval
    return taken


def _holder(cluster: Cluster) -> str | None:
    store = Store(cluster.state)
    try:
        info = store.lease_info("trigger:take")
        return info.holder if info else None
    finally:
        store.close()


def _pid_of(worker: Worker) -> str:
    return str(worker.proc.pid)


def test_a_watch_moves_to_another_worker_each_time_its_worker_is_killed(
        cluster: Cluster, sandbox: Sandbox, fresh_folder: object) -> None:
    folder = fresh_folder(USER)  # type: ignore[operator]
    _setup(cluster, sandbox, folder, "watch")
    first = cluster.start_worker()
    second = cluster.start_worker()
    deadline = time.monotonic() + 30
    while (holder := _holder(cluster)) is None:
        assert time.monotonic() < deadline, first.text()[-2000:]
        time.sleep(0.1)  # poll interval
    holding = first if holder.split(":")[1] == _pid_of(first) else second
    other = second if holding is first else first
    assert holder.split(":")[1] == _pid_of(holding)
    before = _append(sandbox, folder, "before", 4)
    _wait_taken(cluster, 4)
    holding.kill()
    after = _append(sandbox, folder, "after", 4)
    taken = _wait_taken(cluster, 8)
    assert Counter(taken) == Counter(before + after)  # every one taken, none twice
    new_holder = _holder(cluster)
    assert new_holder is not None and new_holder.split(":")[1] == _pid_of(other)
    assert "this worker runs the triggered operation take" in other.text()
    # The second holder dies too, with no other worker running: a fresh one takes the watch up.
    other.kill()
    late = _append(sandbox, folder, "late", 4)
    fresh = cluster.start_worker()
    taken = _wait_taken(cluster, 12)
    assert Counter(taken) == Counter(before + after + late)
    assert (_holder(cluster) or "").split(":")[1] == _pid_of(fresh)


def test_an_every_trigger_runs_on_one_worker_of_two(cluster: Cluster, sandbox: Sandbox,
                                                    fresh_folder: object) -> None:
    folder = fresh_folder(USER)  # type: ignore[operator]
    _setup(cluster, sandbox, folder, {"every": 1})
    workers = [cluster.start_worker(), cluster.start_worker()]
    ids = _append(sandbox, folder, "tick", 3)
    _wait_taken(cluster, 3)
    ids += _append(sandbox, folder, "tock", 3)
    taken = _wait_taken(cluster, 6)
    assert Counter(taken) == Counter(ids)
    runners = [w for w in workers if "this worker runs the triggered operation take" in w.text()]
    assert len(runners) == 1
    # Its runs are in the shared log (a run that found nothing is not kept).
    runs = json.loads(cluster.run("logs", "--operation", "take", "--json").stdout)
    assert sum(r["records_written"] for r in runs) == 6 and all(r["status"] == "success" for r in runs)


def test_a_watch_trigger_on_a_file_source_is_refused_with_its_line(cluster: Cluster, sandbox: Sandbox) -> None:
    doc = yaml.safe_load(cluster.path.read_text())
    doc["operations"]["send-outbox"]["trigger"] = "watch"
    cluster.path.write_text(yaml.safe_dump(doc))
    res = cluster.run("run", "send-outbox")
    assert res.returncode == 3 and "trigger: watch needs a read-email source" in res.stderr
    doc["operations"]["send-outbox"]["trigger"] = {"every": -1}
    cluster.path.write_text(yaml.safe_dump(doc))
    res = cluster.run("run", "send-outbox")
    assert res.returncode == 3 and "operations.send-outbox.trigger" in res.stderr



def test_a_trigger_the_file_gets_wrong_is_reported_once_and_the_others_run(
        cluster: Cluster, sandbox: Sandbox, fresh_folder: object) -> None:
    folder = fresh_folder(USER)  # type: ignore[operator]
    _setup(cluster, sandbox, folder, "watch")
    doc = yaml.safe_load(cluster.path.read_text())
    doc["operations"]["send-outbox"]["trigger"] = "watch"  # a file source: cannot be watched
    cluster.path.write_text(yaml.safe_dump(doc))
    worker = cluster.start_worker()
    ids = _append(sandbox, folder, "good", 2)
    assert Counter(_wait_taken(cluster, 2)) == Counter(ids)  # the good trigger runs
    time.sleep(3)  # a few turns of the trigger loop
    text = worker.text()
    assert text.count("the triggered operation send-outbox cannot run") == 1, text[-3000:]
    assert "watch needs a read-email source" in text and "Traceback" not in text
