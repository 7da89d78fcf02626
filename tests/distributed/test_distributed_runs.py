"""Distributed runs on real processes: `mailconnector worker`s on a real Redis, the state in a real PostgreSQL,
mail through the sandbox's Postfix, every copy counted in the mailboxes. Workers are SIGKILLed mid-send; the
broker is away at submit time; a worker has another project file; a chunk kills its worker each time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

import pytest
import yaml
from services.cluster import Cluster, write_outbox
from services.copies import delivered, mailbox

from mailconnector._cluster import RedisServer
from mailconnector.sandbox import Sandbox
from mailconnector.state import Store

USERS = ("bob", "carol")


def _ledger(cluster: Cluster) -> dict[str, str]:
    store = Store(cluster.state)
    try:
        return {e.message_id: e.status for e in store.ledger_entries(limit=100_000)}
    finally:
        store.close()


def _transform_with(cluster: Cluster, module: str, body: str) -> None:
    """The operation's transformation becomes ``MODULE:check``, a function written in the project directory."""
    (cluster.directory / f"{module}.py").write_text(f"import os\nimport time\n\n\ndef check(record):\n{body}")
    doc = yaml.safe_load(cluster.path.read_text())
    doc["operations"]["send-outbox"]["transformation"] = f"{module}:check"
    cluster.path.write_text(yaml.safe_dump(doc))


def _subjects(sandbox: Sandbox, tok: str) -> list[str]:
    from mailconnector.connection import Connection
    from mailconnector.imap import ImapSession

    found = []
    for user in USERS:
        with ImapSession(Connection.from_dict(sandbox.connection_dict(user), name=f"look-{user}")) as imap:
            imap.select("INBOX", readonly=True)
            uids = imap.search(["SUBJECT", tok])
            if uids:
                for item in imap.client.fetch(uids, [b"BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).values():
                    raw = next(bytes(v) for k, v in item.items() if k.startswith(b"BODY[HEADER"))
                    found.append(raw.decode().split(":", 1)[1].strip())
    return found


def test_a_run_on_two_workers_sends_every_record_once_and_logs_it_in_one_place(
        cluster: Cluster, sandbox: Sandbox) -> None:
    tok = uuid.uuid4().hex[:8]
    write_outbox(cluster.directory, tok, 23, bad={4, 17})
    with open(cluster.directory / "outbox.jsonl", "a", encoding="utf-8") as f:
        f.write('{"to": "bob@example.test", "subject": <script>\n')  # hostile and not JSON: record 23
    cluster.start_worker()
    cluster.start_worker("--debug")
    res = cluster.run("run", "send-outbox", "--distributed", "--wait", "--json")
    assert res.returncode == 1, res.stderr  # three records failed: exit as `run` does
    password = sandbox.info.password("alice")
    assert all(password not in w.text() for w in cluster.workers)
    assert "run_chunk" in cluster.workers[1].text()  # the debug worker logged its tasks
    summary = json.loads(res.stdout)
    assert summary["status"] == "partial" and summary["run_id"]
    assert (summary["read"], summary["written"], summary["failed"], summary["skipped"]) == (24, 21, 3, 0)
    info = cluster.run_info(summary["run_id"])
    assert (info["chunks"], info["chunks_done"], info["records_submitted"]) == (5, 5, 24)
    errors = {e["record"]: e["error"] for e in info["errors"]}
    assert set(errors) == {"record 4", "record 17", "record 23"}  # labelled as a run here labels them
    assert all("not an address" in json.dumps(errors[r]["record"]) for r in ("record 4", "record 17"))
    assert errors["record 23"]["stage"] == "source" and "line 24" in errors["record 23"]["message"]
    ledger = _ledger(cluster)
    box, _ = delivered(sandbox, USERS, tok, set(ledger), must={m for m, s in ledger.items() if s == "sent"})
    assert len(box) == 21 and all(len(copies) == 1 for copies in box.values())
    # The same file run again, here or distributed, sends nothing: the Message-IDs are the same either way.
    again = cluster.run("run", "send-outbox", "--json")
    assert json.loads(again.stdout)["skipped"] == 21
    assert len(mailbox(sandbox, USERS, tok)) == 21


def test_without_wait_it_prints_the_run_id_and_the_workers_finish_it(cluster: Cluster, sandbox: Sandbox) -> None:
    tok = uuid.uuid4().hex[:8]
    write_outbox(cluster.directory, tok, 7)
    res = cluster.run("run", "send-outbox", "--distributed", "--chunk-size", "3")
    assert res.returncode == 0, res.stderr
    run_id = res.stdout.strip()
    assert "7 record(s) in 3 chunk(s) queued" in res.stderr and run_id in res.stderr
    assert cluster.run_info(run_id)["status"] == "running"  # no worker yet: queued in the broker
    cluster.start_worker()
    info = cluster.wait_for_end(run_id)
    assert info["status"] == "success" and info["records_written"] == 7
    ledger = _ledger(cluster)
    box, _ = delivered(sandbox, USERS, tok, set(ledger), must=set(ledger))
    assert len(box) == 7


def test_a_worker_killed_mid_send_leaves_its_chunk_to_another_and_nothing_is_sent_twice(
        cluster: Cluster, sandbox: Sandbox) -> None:
    tok = uuid.uuid4().hex[:8]
    count = 60
    write_outbox(cluster.directory, tok, count)
    first = cluster.start_worker()
    res = cluster.run("run", "send-outbox", "--distributed", "--json")
    assert res.returncode == 0, res.stderr
    run_id = json.loads(res.stdout)["run_id"]
    deadline = time.monotonic() + 60
    while sum(s == "sent" for s in _ledger(cluster).values()) < 12:  # two chunks and a bit are through
        assert time.monotonic() < deadline, first.text()[-3000:]
        assert first.proc.poll() is None, first.text()[-3000:]
        time.sleep(0.02)  # poll interval
    first.kill()
    second = cluster.start_worker()
    info = cluster.wait_for_end(run_id, timeout=120)
    assert info["status"] in ("success", "partial"), info  # partial: a send in flight at the kill is uncertain
    ledger = _ledger(cluster)
    assert len(ledger) == count and set(ledger.values()) <= {"sent", "uncertain"}
    uncertain = {m for m, s in ledger.items() if s == "uncertain"}
    assert info["records_uncertain"] == len(uncertain) and info["records_failed"] == 0
    assert info["records_written"] + info["records_skipped"] + info["records_uncertain"] == count
    box, accepted = delivered(sandbox, USERS, tok, set(ledger), must={m for m, s in ledger.items() if s == "sent"})
    twice = {mid: copies for mid, copies in box.items() if len(copies) > 1}
    assert not twice, f"sent twice: {twice}"
    assert all(len(qids) == 1 for qids in accepted.values()), accepted
    assert set(box) <= set(ledger)
    assert set(ledger) - set(box) <= uncertain  # every message not in the mailbox is reported uncertain
    assert {e["error"].get("outcome") for e in info["errors"]} <= {"uncertain"}
    assert " ready." in second.text()


def test_the_broker_away_at_submit_time_is_a_clear_error_and_starts_nothing(cluster: Cluster) -> None:
    write_outbox(cluster.directory, "away", 3)
    dead = "redis://:hunter2-broker-secret@127.0.0.1:9/0"  # port 9: nothing listens (discard)
    res = cluster.run("run", "send-outbox", "--distributed", "--json", env={"MAILCONNECTOR_BROKER": dead})
    assert res.returncode == 5, res.stderr
    error = json.loads(res.stdout.splitlines()[-1])["error"]
    assert "the broker at redis://:***@127.0.0.1:9/0 does not answer" in error["message"]
    assert "settings.broker" in error["hint"]
    assert "hunter2-broker-secret" not in res.stdout + res.stderr
    assert cluster.run("logs", "--json").stdout.strip() == "[]"


@pytest.mark.parametrize(("settings", "message"), [
    ({"broker": None}, "no broker configured"),
    ({"state": "state.db"}, "needs a shared state store"),
    ({"broker": "http://127.0.0.1:6379"}, "is not a redis:// or amqp:// URL"),
    ({"broker": "redis://:s3cret-pw@127.0.0.1:99999/0"}, "has a port that is not a number from 1 to 65535"),
    ({"broker": "redis://127.0.0.1:6379/0\n<script>"}, "holds a space or a control character"),
    ({"broker": "redis://127.0.0.1:6379/<script>"}, "a Redis database is a number"),
])
def test_distributed_mode_without_what_it_needs_says_so(cluster: Cluster, settings: dict[str, object],
                                                        message: str) -> None:
    doc = yaml.safe_load(cluster.path.read_text())
    doc["settings"].update(settings)
    doc["settings"] = {k: v for k, v in doc["settings"].items() if v is not None}
    cluster.path.write_text(yaml.safe_dump(doc))
    write_outbox(cluster.directory, "needs", 1)
    for argv in (["run", "send-outbox", "--distributed"], ["worker"]):
        res = cluster.run(*argv, timeout=60)
        assert res.returncode == 3, (argv, res.stderr)
        assert message in res.stderr and "hint" in res.stderr


def test_a_file_target_is_refused_and_bad_flags_are_usage_errors(cluster: Cluster) -> None:
    doc = yaml.safe_load(cluster.path.read_text())
    doc["activities"]["copy"] = {"type": "file", "path": "copy.jsonl"}
    doc["operations"]["copy-outbox"] = {"source": "outbox", "target": "copy"}
    cluster.path.write_text(yaml.safe_dump(doc))
    write_outbox(cluster.directory, "file", 1)
    res = cluster.run("run", "copy-outbox", "--distributed")
    assert res.returncode == 3 and "its target 'copy' is a file" in res.stderr
    assert cluster.run("run", "send-outbox", "--distributed", "--watch").returncode == 2
    assert cluster.run("run", "send-outbox", "--chunk-size", "5").returncode == 2
    assert cluster.run("run", "send-outbox", "--distributed", "--chunk-size", "0").returncode == 2


def test_a_worker_with_another_project_file_refuses_the_chunks_and_the_run_says_why(
        cluster: Cluster, sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tmp_path_factory.mktemp("other-worker")
    (other / "mailconnector.yaml").write_text(cluster.path.read_text() + "# edited on this machine only\n")
    cluster.start_worker(directory=other)
    tok = uuid.uuid4().hex[:8]
    write_outbox(cluster.directory, tok, 6)
    res = cluster.run("run", "send-outbox", "--distributed", "--wait", "--json")
    assert res.returncode == 1, res.stderr
    summary = json.loads(res.stdout)
    assert summary["status"] == "error" and summary["failed"] == 6 and summary["written"] == 0
    assert "another version of the project file" in summary["error"]
    assert "deploy the same mailconnector.yaml" in summary["error"]
    assert _ledger(cluster) == {} and mailbox(sandbox, USERS, tok) == {}


def test_a_chunk_that_kills_its_worker_each_time_is_given_up_and_the_rest_is_sent(
        cluster: Cluster, sandbox: Sandbox) -> None:
    _transform_with(cluster, "poison", "    if record.get('poison'):\n        os._exit(1)  # the process dies\n"
                    "    return record\n")
    tok = uuid.uuid4().hex[:8]
    write_outbox(cluster.directory, tok, 10)
    lines = (cluster.directory / "outbox.jsonl").read_text().splitlines()
    record = json.loads(lines[7])
    lines[7] = json.dumps({**record, "poison": True})
    (cluster.directory / "outbox.jsonl").write_text("\n".join(lines) + "\n")
    cluster.start_worker()
    res = cluster.run("run", "send-outbox", "--distributed", "--wait", "--json", timeout=180)
    summary = json.loads(res.stdout)
    assert res.returncode == 1 and summary["status"] == "error", res.stderr
    assert "chunk 1 was started 3 times" in summary["error"]
    ledger = _ledger(cluster)
    sent = {m for m, s in ledger.items() if s == "sent"}
    box, _ = delivered(sandbox, USERS, tok, set(ledger), must=sent)
    assert all(len(c) == 1 for c in box.values())
    # The first chunk whole, and what the second sent before its poisoned record was transformed: none, one or
    # both of its first two (the records are transformed ahead of the sends); never a record after it.
    assert 5 <= len(box) <= 7
    subjects = {int(s.rsplit(" ", 1)[1]) for s in _subjects(sandbox, tok)}
    assert subjects <= {0, 1, 2, 3, 4, 5, 6}
    assert Counter(ledger.values())["sent"] == len(box)


def _newest_run(cluster: Cluster, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        runs = json.loads(cluster.run("logs", "--json").stdout)
        if runs:
            return str(runs[0]["run_id"])
        assert time.monotonic() < deadline, "no run started"
        time.sleep(0.2)  # poll interval


@pytest.mark.parametrize("broker", ["restarts empty", "stays down"])
def test_a_broker_lost_mid_run_ends_the_run_with_the_reason_and_a_rerun_sends_the_rest(
        cluster: Cluster, sandbox: Sandbox, redis_server: RedisServer, broker: str) -> None:
    tok = uuid.uuid4().hex[:8]
    count = 40
    write_outbox(cluster.directory, tok, count)
    # 50 ms per record, so that the broker goes while most chunks are still queued.
    _transform_with(cluster, "slow", "    time.sleep(0.05)\n    return record\n")
    cluster.start_worker()
    follower = subprocess.Popen([sys.executable, "-m", "mailconnector", "run", "send-outbox", "--distributed",
                                 "--wait", "--json"], cwd=cluster.directory, env=cluster.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = _newest_run(cluster)
        store = Store(cluster.state)
        try:
            deadline = time.monotonic() + 60
            while (store.get_run(run_id, errors=False) or {}).get("chunks_done", 0) < 2:
                assert time.monotonic() < deadline and follower.poll() is None
                time.sleep(0.01)  # poll interval
        finally:
            store.close()
        if broker == "restarts empty":
            redis_server.restart()
        else:
            redis_server.down()
        out, err = follower.communicate(timeout=90)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        if not redis_server.running:
            redis_server.restart()
    assert follower.returncode == 1, err
    summary = json.loads(out)
    assert summary["status"] == "error" and summary["written"] < count
    reason = {"restarts empty": "no longer in the broker's queue and no worker runs them",
              "stays down": "stopped answering while the run waited"}[broker]
    assert reason in summary["error"] and "Run the operation again" in summary["error"]
    # Nothing lost: a second run sends what the first did not, and nothing twice.
    cluster.start_worker()
    again = cluster.run("run", "send-outbox", "--distributed", "--wait", "--json", timeout=120)
    rerun = json.loads(again.stdout)
    assert again.returncode == 0 and rerun["status"] == "success", again.stderr
    assert rerun["written"] + rerun["skipped"] == count and rerun["skipped"] >= summary["written"]
    ledger = _ledger(cluster)
    assert len(ledger) == count and set(ledger.values()) == {"sent"}
    box, accepted = delivered(sandbox, USERS, tok, set(ledger), must=set(ledger))
    assert len(box) == count and all(len(c) == 1 for c in box.values())
    assert all(len(q) == 1 for q in accepted.values())


def test_sigterm_stops_a_worker_after_its_chunk_and_celerys_own_command_takes_the_rest(
        cluster: Cluster, sandbox: Sandbox) -> None:
    tok = uuid.uuid4().hex[:8]
    count = 30
    write_outbox(cluster.directory, tok, count)
    _transform_with(cluster, "slow", "    time.sleep(0.1)\n    return record\n")
    worker = cluster.start_worker()
    res = cluster.run("run", "send-outbox", "--distributed", "--json")
    run_id = json.loads(res.stdout)["run_id"]
    store = Store(cluster.state)
    try:
        deadline = time.monotonic() + 60
        while not any(lease.name.startswith(f"chunk:{run_id}/1") for lease in store.leases()):
            assert time.monotonic() < deadline, worker.text()[-2000:]
            time.sleep(0.01)  # poll interval: the second chunk has started
        worker.proc.send_signal(signal.SIGTERM)  # its main process, as `KillMode=mixed` does
        assert worker.proc.wait(timeout=60) == 0, worker.text()[-3000:]
        run = store.get_run(run_id, errors=False)
        assert run is not None and run["status"] == "running"
        assert run["chunks_done"] >= 2 and run["records_written"] == 5 * run["chunks_done"]  # whole chunks only
        assert not any(lease.name.startswith(f"chunk:{run_id}/") for lease in store.leases())
    finally:
        store.close()
    # The rest, by a worker started as people who run Celery their own way start one.
    log = cluster.directory / "celery.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "mailconnector.celery", "worker",
                                 "--concurrency", "1", "--loglevel", "INFO"], cwd=cluster.directory,
                                env={**cluster.env, "MAILCONNECTOR_PROJECT": str(cluster.path)},
                                stdout=out, stderr=out, start_new_session=True)
    try:
        info = cluster.wait_for_end(run_id)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    assert info["status"] == "success" and info["records_written"] == count and info["records_skipped"] == 0, info
    assert "mailconnector.run_chunk" in log.read_text(errors="replace")
    ledger = _ledger(cluster)
    box, _ = delivered(sandbox, USERS, tok, set(ledger), must=set(ledger))
    assert len(box) == count and all(len(c) == 1 for c in box.values())


def test_the_consoles_run_button_queues_for_the_workers_and_follows_the_run(
        cluster: Cluster, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.cluster import PW_VAR
    from starlette.testclient import TestClient

    from mailconnector.console import create_app

    monkeypatch.setenv(PW_VAR, sandbox.info.password("alice"))
    monkeypatch.delenv("MAILCONNECTOR_BROKER", raising=False)
    monkeypatch.delenv("MAILCONNECTOR_STATE", raising=False)
    tok = uuid.uuid4().hex[:8]
    write_outbox(cluster.directory, tok, 12)
    cluster.start_worker()
    token = "distributed-console-token-0123"
    with TestClient(create_app(cluster.path, token=token), base_url="http://127.0.0.1:8025",
                    headers={"Authorization": f"Bearer {token}"}) as api:
        assert api.get("/api/operations").json()[0]["runs_on"] == "workers"
        assert api.post("/api/operations/send-outbox/runs", json={"distributed": "yes"}).status_code == 400
        started = api.post("/api/operations/send-outbox/runs")
        assert started.status_code == 202 and started.json()["distributed"] is True, started.text
        run_id, job = started.json()["run_id"], started.json()["job"]
        deadline = time.monotonic() + 60
        while not (view := api.get(f"/api/jobs/{job}").json())["done"]:
            assert time.monotonic() < deadline, view
            time.sleep(0.2)  # poll interval
        assert view["result"]["status"] == "success" and view["result"]["written"] == 12, view
        run = api.get(f"/api/runs/{run_id}").json()
        assert run["status"] == "success" and run["chunks"] == 3 and run["records_written"] == 12
        page = api.get(f"/runs/{run_id}", headers={"Accept": "text/html"}).text
        assert "3 of 3 chunk(s) done, 12 record(s) queued" in page
        # Asked to, the console runs it itself: everything was sent already, so all of it is skipped.
        local = api.post("/api/operations/send-outbox/runs", json={"distributed": False}).json()
        assert local["distributed"] is False
        deadline = time.monotonic() + 60
        while not (view := api.get(f"/api/jobs/{local['job']}").json())["done"]:
            assert time.monotonic() < deadline, view
            time.sleep(0.2)  # poll interval
        assert view["result"]["skipped"] == 12 and view["result"]["written"] == 0
    ledger = _ledger(cluster)
    box, _ = delivered(sandbox, USERS, tok, set(ledger), must=set(ledger))
    assert len(box) == 12 and all(len(c) == 1 for c in box.values())


def test_a_connections_rate_holds_for_all_workers_together(cluster: Cluster, sandbox: Sandbox) -> None:
    doc = yaml.safe_load(cluster.path.read_text())
    doc["connections"]["mail"]["limits"] = {"messages_per_minute": 600}  # one every 0.1 s, all workers
    cluster.path.write_text(yaml.safe_dump(doc))
    tok = uuid.uuid4().hex[:8]
    write_outbox(cluster.directory, tok, 20)
    cluster.start_worker()
    cluster.start_worker()
    started = time.monotonic()
    res = cluster.run("run", "send-outbox", "--distributed", "--wait", "--json")
    elapsed = time.monotonic() - started
    assert res.returncode == 0 and json.loads(res.stdout)["written"] == 20, res.stderr
    # Twenty slots 0.1 s apart, whichever worker took each: no less than 1.9 s from submit to the end.
    assert elapsed >= 1.9
    # And the slots were the account's, shared: its next free slot is at least twenty intervals after the
    # submit, on the store's clock (each worker pacing only itself would have left it about ten after).
    store = Store(cluster.state)
    try:
        [(next_at, now)] = store._q(  # type: ignore[attr-defined]
            "SELECT next_at, EXTRACT(EPOCH FROM clock_timestamp()) FROM send_pace WHERE name = ?",
            ("send:alice@example.test",))
    finally:
        store.close()
    assert float(next_at) - (float(now) - (time.monotonic() - started)) >= 20 * 0.1
    ledger = _ledger(cluster)
    box, _ = delivered(sandbox, USERS, tok, set(ledger), must=set(ledger))
    assert len(box) == 20


def test_a_record_whose_transformation_raises_fails_alone_in_its_chunk(cluster: Cluster, sandbox: Sandbox) -> None:
    _transform_with(cluster, "picky", "    if record['subject'].endswith(' 3'):\n"
                    "        raise ValueError('no third one')\n    return record\n")
    tok = uuid.uuid4().hex[:8]
    write_outbox(cluster.directory, tok, 8)
    cluster.start_worker()
    res = cluster.run("run", "send-outbox", "--distributed", "--wait", "--json")
    summary = json.loads(res.stdout)
    assert res.returncode == 1 and summary["status"] == "partial", res.stderr
    assert (summary["written"], summary["failed"]) == (7, 1)
    [error] = cluster.run_info(summary["run_id"])["errors"]
    assert error["record"] == "record 3" and error["error"]["type"] == "TransformationError"
    assert "ValueError: no third one" in error["error"]["message"]
    ledger = _ledger(cluster)
    box, _ = delivered(sandbox, USERS, tok, set(ledger), must=set(ledger))
    assert len(box) == 7


@pytest.mark.parametrize("url", ["REDIS://:Top/Secret-99@127.0.0.1:99999/0",
                                 "redis+socket://:TopSecret-99@/tmp/sock",
                                 "redis://:Top/Secret-99@127.0.0.1:6379/zero"])
def test_a_hostile_broker_url_from_the_environment_never_shows_its_password(cluster: Cluster, url: str) -> None:
    write_outbox(cluster.directory, "env", 1)
    for argv in (["run", "send-outbox", "--distributed", "--json"], ["worker"]):
        res = cluster.run(*argv, timeout=60, env={"MAILCONNECTOR_BROKER": url})
        assert res.returncode == 3, (argv, res.stderr)
        assert "MAILCONNECTOR_BROKER" in res.stderr and "Secret-99" not in res.stdout + res.stderr


def test_a_worker_whose_project_file_is_broken_for_a_while_runs_the_chunk_once_it_is_whole(
        cluster: Cluster, sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A deploy that writes the file in two steps: a chunk that meets the half-written file is queued again,
    not dropped (its run would never end)."""
    other = tmp_path_factory.mktemp("deploying-worker")
    whole = cluster.path.read_text()
    (other / "mailconnector.yaml").write_text(whole)
    worker = cluster.start_worker(directory=other)
    (other / "mailconnector.yaml").write_text("connections: [half written\n")
    tok = uuid.uuid4().hex[:8]
    write_outbox(cluster.directory, tok, 3)
    res = cluster.run("run", "send-outbox", "--distributed", "--json")
    run_id = json.loads(res.stdout)["run_id"]
    deadline = time.monotonic() + 30
    while "queued again" not in worker.text():
        assert time.monotonic() < deadline, worker.text()[-2000:]
        time.sleep(0.1)  # poll interval
    assert cluster.run_info(run_id)["status"] == "running"
    (other / "mailconnector.yaml").write_text(whole)
    info = cluster.wait_for_end(run_id, timeout=60)
    assert info["status"] == "success" and info["records_written"] == 3
    ledger = _ledger(cluster)
    box, _ = delivered(sandbox, USERS, tok, set(ledger), must=set(ledger))
    assert len(box) == 3 and all(len(c) == 1 for c in box.values())
