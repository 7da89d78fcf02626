"""One conformance suite for every store backend: the SQLite file and a real PostgreSQL server.

Each role's promises (atomic claims, fenced leases judged by the store's clock, read state that never
moves backwards, run logs) are checked the same way on both, including from several threads and from two
store objects at once (what two processes see).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailconnector.cli._exit_codes import exit_code_for
from mailconnector.errors import StateError
from mailconnector.state import Fence, StateStore, Store

Opener = Callable[[], StateStore]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the same store again on each call (another process's view of it)."""
    target = str(tmp_path / "state.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    opened: list[StateStore] = []

    def opener() -> StateStore:
        store = Store(target)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Opener) -> StateStore:
    return open_store()


# ---------------------------------------------------------------------------------------------- ledger
def test_a_claim_is_granted_once_and_names_its_holder(store: StateStore) -> None:
    first = store.claim("<a@x>", connection="c", holder="h1", recipients=["bob@example.test"])
    second = store.claim("<a@x>", connection="c", holder="h2", recipients=["bob@example.test"])
    assert first.granted and not second.granted
    assert (second.status, second.holder) == ("claimed", "h1")
    entry = store.ledger_entry("<a@x>")
    assert entry is not None and entry.status == "claimed" and entry.recipients == ["bob@example.test"]


def test_claims_race_from_threads_and_two_store_objects(open_store: Opener) -> None:
    stores = [open_store(), open_store()]
    ids = [f"<m{i}@x>" for i in range(150)]

    def claim_all(worker: int) -> list[str]:
        store = stores[worker % 2]
        return [mid for mid in ids
                if store.claim(mid, connection="c", holder=f"w{worker}", recipients=[]).granted]

    with ThreadPoolExecutor(6) as pool:
        granted = [mid for got in pool.map(claim_all, range(6)) for mid in got]
    assert Counter(granted) == Counter(ids)  # every Message-ID granted exactly once


def test_settle_release_abandon_and_resolve(store: StateStore) -> None:
    store.claim("<s@x>", connection="c", holder="h", recipients=["a@x"])
    store.settle("<s@x>", holder="h", status="partial", accepted=["a@x"])
    entry = store.ledger_entry("<s@x>")
    assert entry is not None and entry.status == "partial" and entry.accepted == ["a@x"] and entry.settled_at

    store.claim("<r@x>", connection="c", holder="h", recipients=[])
    store.release("<r@x>", holder="other")  # not the holder: nothing happens
    assert store.ledger_entry("<r@x>") is not None
    store.release("<r@x>", holder="h")
    assert store.ledger_entry("<r@x>") is None
    assert store.claim("<r@x>", connection="c", holder="h2", recipients=[]).granted  # a rerun may send it

    store.claim("<u@x>", connection="c", holder="dead", recipients=[])
    assert not store.abandon("<u@x>", holder="someone-else")
    assert store.abandon("<u@x>", holder="dead")
    assert not store.abandon("<u@x>", holder="dead")  # only a claim can be abandoned
    entry = store.ledger_entry("<u@x>")
    assert entry is not None and entry.status == "uncertain" and entry.note
    assert not store.claim("<u@x>", connection="c", holder="h3", recipients=[]).granted

    resolved = store.resolve("<u@x>", sent=True, note="found in the mailbox")
    assert resolved is not None and resolved.status == "sent" and resolved.note == "found in the mailbox"
    store.claim("<v@x>", connection="c", holder="dead", recipients=[])
    store.abandon("<v@x>", holder="dead")
    assert store.resolve("<v@x>", sent=False, note="not there") is None  # forgotten: the next run sends it
    assert store.claim("<v@x>", connection="c", holder="h4", recipients=[]).granted
    assert store.resolve("<v@x>", sent=False, note="x") is not None  # a live claim is not touched


def test_settle_after_a_manual_resolution_keeps_the_truth(store: StateStore) -> None:
    store.claim("<k@x>", connection="c", holder="slow", recipients=[])
    store.abandon("<k@x>", holder="slow")
    store.resolve("<k@x>", sent=False, note="looked, not there")  # the entry is gone
    store.settle("<k@x>", holder="slow", status="sent", accepted=["a@x"])  # the slow sender did send it
    entry = store.ledger_entry("<k@x>")
    assert entry is not None and entry.status == "sent"


def test_ledger_listing_filters_by_status_and_searches_ids_and_recipients(store: StateStore) -> None:
    for i, (status, rcpt) in enumerate([("sent", "Bob@Example.test"), ("uncertain", "carol@example.test"),
                                        ("sent", "dave_100%@example.test")]):
        store.claim(f"<id{i}@x>", connection="c", holder="h", recipients=[rcpt])
        store.settle(f"<id{i}@x>", holder="h", status=status, accepted=[])  # type: ignore[arg-type]
    assert [e.message_id for e in store.ledger_entries(status="uncertain")] == ["<id1@x>"]
    assert [e.message_id for e in store.ledger_entries(search="bob@example")] == ["<id0@x>"]
    assert [e.message_id for e in store.ledger_entries(search="_100%")] == ["<id2@x>"]
    assert store.ledger_entries(search="%") == [store.ledger_entry("<id2@x>")]  # % is a character, not a wildcard
    assert [e.message_id for e in store.ledger_entries(search="ID1@")] == ["<id1@x>"]
    assert len(store.ledger_entries(limit=2)) == 2


# ---------------------------------------------------------------------------------------------- leases
def test_a_lease_has_one_holder_and_its_token_grows_with_each_new_holder(open_store: Opener) -> None:
    a, b = open_store(), open_store()
    fa = a.acquire_lease("read:acct/INBOX", ttl=30, holder="A")
    assert fa is not None and b.acquire_lease("read:acct/INBOX", ttl=30, holder="B") is None
    again = a.acquire_lease("read:acct/INBOX", ttl=30, holder="A")  # the holder renews: same token
    assert again == fa
    info = b.lease_info("read:acct/INBOX")
    assert info is not None and info.holder == "A" and 25 < info.expires_in <= 30
    a.release_lease(fa)
    assert b.lease_info("read:acct/INBOX") is None
    fb = b.acquire_lease("read:acct/INBOX", ttl=30, holder="B")
    assert fb is not None and fb.token > fa.token
    fa2 = a.acquire_lease("read:acct/INBOX", ttl=30, holder="A")
    assert fa2 is None
    assert [lease.name for lease in a.leases()] == ["read:acct/INBOX"]


def test_an_expired_lease_is_taken_over_and_fences_out_its_old_holder(open_store: Opener) -> None:
    a, b = open_store(), open_store()
    fa = a.acquire_lease("read:acct/F", ttl=0.3, holder="A")
    assert fa is not None
    a.record_delivered("acct", "F", 1, 1, "<1@x>", "mark_read", fa)
    time.sleep(0.5)  # expired by the store's clock; nobody took it yet: the old holder may renew
    assert a.renew_lease(fa, ttl=0.3)
    time.sleep(0.5)
    fb = b.acquire_lease("read:acct/F", ttl=30, holder="B")
    assert fb is not None and fb.token > fa.token
    assert not a.renew_lease(fa, ttl=30) and not a.check_fence(fa) and b.check_fence(fb)
    with pytest.raises(StateError, match="lost the lease on acct/F") as ei:
        a.record_delivered("acct", "F", 1, 2, "<2@x>", "mark_read", fa)
    assert exit_code_for(ei.value) == 8
    for write in (lambda: a.move_checkpoint("acct", "F", 1, 9, fa),
                  lambda: a.actions_done("acct", "F", 1, [1], fa),
                  lambda: a.adopt_delivered("acct", "F", 2, [(5, "<1@x>")], fa)):
        with pytest.raises(StateError, match="lost the lease"):
            write()
    assert set(b.delivered("acct", "F", 1)) == {1} and b.checkpoint("acct", "F") is None
    assert not b.delivered("acct", "F", 1)[1].done
    a.release_lease(fa)  # releasing a lease one no longer holds does nothing
    assert b.check_fence(fb)


def test_a_lease_is_taken_by_one_of_many_contenders(open_store: Opener) -> None:
    stores = [open_store(), open_store()]
    barrier = threading.Barrier(8)

    def contend(i: int) -> Fence | None:
        barrier.wait()
        return stores[i % 2].acquire_lease("read:acct/race", ttl=30, holder=f"H{i}")

    with ThreadPoolExecutor(8) as pool:
        winners = [f for f in pool.map(contend, range(8)) if f is not None]
    assert len(winners) == 1


def test_polls_are_noted_and_a_clean_stop_is_told_from_a_silent_holder(open_store: Opener) -> None:
    a, b = open_store(), open_store()
    fa = a.acquire_lease("read:acct/P", ttl=30, holder="A")
    assert fa is not None
    info = b.lease_info("read:acct/P")
    assert info is not None and info.polled_at is None and info.poll_due is None and info.released_at is None
    a.mark_polled(fa, next_within=60)
    info = b.lease_info("read:acct/P")
    assert info is not None and info.polled_at is not None and info.poll_due is not None
    assert info.poll_due - info.polled_at == pytest.approx(60, abs=0.01)
    a.mark_polled(Fence("read:acct/P", "A", fa.token + 1), next_within=1)  # not its fence: nothing changes
    after = b.lease_info("read:acct/P")
    assert after is not None and (after.polled_at, after.poll_due) == (info.polled_at, info.poll_due)
    a.release_lease(fa)
    assert b.leases() == [] and b.leases(ended_within=3600)[0].released_at is not None
    # A holder that stops renewing without giving its lease back: ended, not released.
    fs = a.acquire_lease("read:acct/S", ttl=0.2, holder="S")
    assert fs is not None
    a.mark_polled(fs, next_within=5)
    time.sleep(0.4)
    assert [lease.name for lease in b.leases()] == []
    silent = {lease.name: lease for lease in b.leases(ended_within=3600)}["read:acct/S"]
    assert silent.released_at is None and silent.expires_in < 0 and silent.polled_at is not None
    # Taken over: the newcomer has polled nothing yet.
    fb = b.acquire_lease("read:acct/S", ttl=30, holder="B")
    assert fb is not None
    taken = b.lease_info("read:acct/S")
    assert taken is not None and taken.holder == "B" and taken.polled_at is None and taken.released_at is None


# ------------------------------------------------------------------------------------------ read state
def test_read_state_records_actions_and_checkpoints(store: StateStore) -> None:
    fence = store.acquire_lease("read:acct/INBOX", ttl=30, holder="me")
    assert store.checkpoint("acct", "INBOX") is None
    store.record_delivered("acct", "INBOX", 7, 10, "<a@x>", "mark_read", fence)
    store.record_delivered("acct", "INBOX", 7, 11, "<b@x>", "keep_unread", fence)
    store.record_delivered("acct", "INBOX", 7, 12, None, "move:Archive", None)  # unfenced: a library caller
    delivered = store.delivered("acct", "INBOX", 7)
    assert {u: (d.action, d.done) for u, d in delivered.items()} == {
        10: ("mark_read", False), 11: ("keep_unread", True), 12: ("move:Archive", False)}
    store.actions_done("acct", "INBOX", 7, [10, 12], fence)
    assert all(d.done for d in store.delivered("acct", "INBOX", 7).values())
    store.move_checkpoint("acct", "INBOX", 7, 12, fence)
    store.move_checkpoint("acct", "INBOX", 7, 4, fence)  # never backwards
    cp = store.checkpoint("acct", "INBOX")
    assert cp is not None and (cp.uidvalidity, cp.last_uid) == (7, 12)
    store.adopt_delivered("acct", "INBOX", 8, [(3, "<a@x>")], fence)  # the folder was recreated
    cp = store.checkpoint("acct", "INBOX")
    assert cp is not None and (cp.uidvalidity, cp.last_uid) == (8, 3)
    assert set(store.delivered("acct", "INBOX", 8)) == {3}
    assert store.delivered_message_ids("acct", "INBOX") == {"<a@x>", "<b@x>"}
    store.move_checkpoint("acct", "INBOX", 9, 1, fence)  # another UIDVALIDITY starts over
    cp = store.checkpoint("acct", "INBOX")
    assert cp is not None and (cp.uidvalidity, cp.last_uid) == (9, 1)
    assert store.checkpoint("other", "INBOX") is None and store.delivered("acct", "Sent", 7) == {}
    [state] = store.read_states("acct")
    assert (state["folder"], state["delivered"], state["actions_pending"]) == ("INBOX", 4, 0)
    assert store.reset_read_state("acct", "INBOX") == 4
    assert store.checkpoint("acct", "INBOX") is None and store.read_states() == []


def test_read_state_kept_under_another_key_is_adopted_once(store: StateStore) -> None:
    store.record_delivered("connection:old", "inbox", 5, 1, "<a@x>", "legacy", None)
    store.move_checkpoint("connection:old", "inbox", 5, 1, None)
    assert store.adopt_account("connection:old", "inbox", "host:993/u", "INBOX")
    assert set(store.delivered("host:993/u", "INBOX", 5)) == {1}
    assert store.checkpoint("connection:old", "inbox") is None
    store.move_checkpoint("connection:old", "inbox", 5, 9, None)
    assert not store.adopt_account("connection:old", "inbox", "host:993/u", "INBOX")  # already has its own


# ------------------------------------------------------------------------------------ tokens, run logs
def test_token_cache(store: StateStore) -> None:
    assert store.get_token("k") is None
    store.put_token("k", "v1", 100.0)
    store.put_token("k", "v2", 200.0)
    assert store.get_token("k") == ("v2", 200.0)
    store.delete_token("k")
    assert store.get_token("k") is None


def test_run_log(store: StateStore) -> None:
    first = store.start_run("op", {"source": {"type": "file"}})
    for i in range(3):
        store.record_run_error(first, f"record {i}", {"message": f"bad {i}"})
    store.finish_run(first, status="partial", read=5, written=2, failed=3)
    run = store.get_run(first)
    assert run is not None and run["status"] == "partial" and run["settings"] == {"source": {"type": "file"}}
    assert (run["records_read"], run["records_written"], run["records_failed"]) == (5, 2, 3)
    assert [e["record"] for e in run["errors"]] == ["record 0", "record 1", "record 2"]
    time.sleep(0.02)
    second = store.start_run("other", {})
    assert [r["run_id"] for r in store.list_runs()] == [second, first]
    assert [r["run_id"] for r in store.list_runs(operation="op")] == [first]
    assert store.prune_runs(max_count=1) == 1
    assert store.get_run(first) is None and store.get_run(second) is not None
    store.delete_run(second)
    assert store.list_runs() == []
    third = store.start_run("op", {})
    assert store.prune_runs(max_age_days=1) == 0 and store.prune_runs() == 0
    assert store.get_run(third) is not None


def test_run_log_filters_and_totals(open_store: Opener, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store = open_store()
    old = store.start_run("op", {})
    store.finish_run(old, status="success", read=4, written=4, failed=0)
    time.sleep(0.05)
    cut = time.time()
    time.sleep(0.05)
    bad = store.start_run("op", {})
    store.record_run_error(bad, "record 1", {"message": "refused"})
    store.finish_run(bad, status="partial", read=3, written=1, failed=1, skipped=1)
    live = store.start_run("other", {})  # still running, in this live process
    # A run whose process was killed before it could finish it: it reads as interrupted.
    backend = request.node.callspec.params["open_store"]
    target = str(tmp_path / "state.db") if backend == "sqlite" else request.getfixturevalue("postgres_url")
    code = "import os, sys; from mailconnector.state import Store; Store(sys.argv[1]).start_run('op', {}); os._exit(0)"
    subprocess.run([sys.executable, "-c", code, target], check=True, timeout=60)
    assert [r["run_id"] for r in store.list_runs(status="partial")] == [bad]
    assert [r["run_id"] for r in store.list_runs(status="running")] == [live]
    killed = store.list_runs(status="interrupted")
    assert len(killed) == 1 and killed[0]["operation"] == "op" and "ended before the run finished" in killed[0]["error"]
    assert {r["run_id"] for r in store.list_runs(since=cut)} == {bad, live, killed[0]["run_id"]}
    assert [r["run_id"] for r in store.list_runs(operation="op", since=cut, status="partial")] == [bad]
    totals = {(t["operation"], t["status"]): t for t in store.run_totals()}
    assert set(totals) == {("op", "success"), ("op", "partial"), ("op", "interrupted"), ("other", "running")}
    assert totals[("op", "success")]["runs"] == 1 and totals[("op", "success")]["records_written"] == 4
    partial = totals[("op", "partial")]
    assert (partial["records_read"], partial["records_failed"], partial["records_skipped"]) == (3, 1, 1)
    assert totals[("op", "interrupted")]["runs"] == 1 and totals[("other", "running")]["runs"] == 1


def test_two_runs_drawing_the_same_id_in_the_same_second_both_start(store: StateStore,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import types
    import uuid

    from mailconnector.state import _sql

    a, b = uuid.UUID(hex="aaaaaa" + "0" * 26), uuid.UUID(hex="bbbbbb" + "0" * 26)
    draws = iter([a, a, b])
    monkeypatch.setattr(_sql, "uuid", types.SimpleNamespace(uuid4=lambda: next(draws)))
    monkeypatch.setattr(_sql, "time", types.SimpleNamespace(strftime=lambda fmt: "20261202-120000-"))
    first, second = store.start_run("op", {}), store.start_run("op", {})
    monkeypatch.undo()
    assert (first, second) == ("20261202-120000-aaaaaa", "20261202-120000-bbbbbb")
    assert store.get_run(first) is not None and store.get_run(second) is not None


# ------------------------------------------------------------------------------------- distributed runs
def test_a_distributed_run_counts_each_chunk_once_and_ends_with_its_last(open_store: Opener) -> None:
    store = open_store()
    run_id = store.start_run("op", {"distributed": {"chunk_size": 2}})
    # A chunk may finish before the submitter has queued the rest: the run stays running until it knows how many.
    assert store.finish_chunk(run_id, 0, status="success", read=2, written=2, worker="w1")
    assert not store.finish_chunk(run_id, 0, status="success", read=2, written=2, worker="w2")  # a second copy
    assert store.chunk_done(run_id, 0) and not store.chunk_done(run_id, 1)
    running = store.get_run(run_id)
    assert running is not None and running["status"] == "running" and running["records_written"] == 2
    store.set_run_chunks(run_id, 3, 5)
    assert store.list_runs(status="running")[0]["run_id"] == run_id  # no process holds it: never "interrupted"
    assert store.finish_chunk(run_id, 2, status="partial", read=1, written=0, skipped=0, uncertain=1,
                              errors=[("line 5", {"message": "may have been sent", "outcome": "uncertain"})])
    assert store.get_run(run_id)["status"] == "running"  # type: ignore[index]
    assert store.finish_chunk(run_id, 1, status="partial", read=2, written=1, failed=1,
                              errors=[("line 3", {"message": "refused"})])
    run = store.get_run(run_id)
    assert run is not None and run["status"] == "partial" and run["ended_at"] is not None
    assert (run["records_read"], run["records_written"], run["records_failed"], run["records_uncertain"]) == (
        5, 3, 1, 1)
    assert (run["chunks"], run["chunks_done"], run["records_submitted"]) == (3, 3, 5)
    assert [e["record"] for e in run["errors"]] == ["line 5", "line 3"]
    assert "errors" not in store.get_run(run_id, errors=False)  # type: ignore[operator]
    assert not store.finish_chunk(run_id, 1, status="success", read=2, written=2)  # late copy: nothing changes
    assert store.get_run(run_id)["records_written"] == 3  # type: ignore[index]
    store.delete_run(run_id)
    assert store.get_run(run_id) is None and not store.chunk_done(run_id, 0)


def test_a_chunk_that_failed_to_run_makes_the_run_an_error_and_an_empty_run_ends_at_once(store: StateStore) -> None:
    run_id = store.start_run("op", {})
    store.set_run_chunks(run_id, 2, 4)
    store.finish_chunk(run_id, 1, status="error", error="the worker has another project file", failed=2)
    store.finish_chunk(run_id, 0, status="success", read=2, written=2)
    run = store.get_run(run_id)
    assert run is not None and run["status"] == "error"
    assert run["error"] == "chunk 1: the worker has another project file" and run["records_failed"] == 2
    empty = store.start_run("op", {})
    store.set_run_chunks(empty, 0, 0)
    assert store.get_run(empty)["status"] == "success"  # type: ignore[index]
    aborted = store.start_run("op", {})
    store.abort_run(aborted, "the broker went away after 1 chunk", chunks=1)
    store.finish_chunk(aborted, 0, status="success", read=3, written=3)  # the chunk queued before still counts
    run = store.get_run(aborted)
    assert run is not None and run["status"] == "error" and run["records_written"] == 3
    assert run["error"] == "the broker went away after 1 chunk"


def test_the_last_chunks_finishing_at_once_end_the_run_exactly_once(open_store: Opener) -> None:
    stores = [open_store(), open_store()]
    for attempt in range(5):
        run_id = stores[0].start_run("op", {})
        stores[0].set_run_chunks(run_id, 8, 8)
        barrier = threading.Barrier(8)

        def finish(chunk: int, run_id: str = run_id, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            stores[chunk % 2].finish_chunk(run_id, chunk, status="success", read=1, written=1)

        threads = [threading.Thread(target=finish, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        run = stores[1].get_run(run_id)
        assert run is not None and run["status"] == "success", attempt
        assert run["records_written"] == 8 and run["chunks_done"] == 8


# -------------------------------------------------------------------------------------------- send pace
def test_send_slots_are_spaced_across_threads_and_store_objects(open_store: Opener) -> None:
    stores = [open_store(), open_store()]
    interval = 0.05
    taken: list[float] = []
    lock = threading.Lock()

    def take(n: int) -> None:
        for _ in range(5):
            wait = stores[n % 2].reserve_send("send:a@example.test", interval)
            with lock:
                taken.append(time.monotonic() + wait)  # when this slot comes, on one clock

    threads = [threading.Thread(target=take, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots = sorted(taken)
    assert len(slots) == 20
    # Twenty slots a twentieth of a second apart: the last is at least ~0.95 s after the first, whatever the
    # threads' order (measured on this process's clock; each wait was computed on the store's).
    assert slots[-1] - slots[0] >= 19 * interval - 0.2
    assert stores[0].reserve_send("send:other@example.test", interval) == 0.0  # another account: no wait


def test_a_slow_down_pushes_every_later_slot(store: StateStore) -> None:
    assert store.reserve_send("send:b", 0.01) == 0.0
    store.slow_down("send:b", 2.0)
    assert 1.5 < store.reserve_send("send:b", 0.01) <= 2.0
    store.slow_down("send:b", 0.0)  # never brings a slot forward
    assert store.reserve_send("send:b", 0.01) > 1.5


def test_a_days_recipients_are_counted_up_to_the_limit(store: StateStore) -> None:
    assert store.count_recipients("send:c", 3, per_day=5)
    assert store.count_recipients("send:c", 2, per_day=5)
    assert not store.count_recipients("send:c", 1, per_day=5)  # 6 > 5: refused, nothing counted
    assert not store.count_recipients("send:d", 6, per_day=5)
    assert store.count_recipients("send:d", 5, per_day=5)
    store._w("UPDATE send_pace SET day = '2000-01-01' WHERE name = 'send:c'")  # type: ignore[attr-defined]
    assert store.count_recipients("send:c", 5, per_day=5)  # a new day starts at zero


# ------------------------------------------------------------------------------------------ migrations
def test_reopening_is_idempotent_and_a_newer_store_is_refused(open_store: Opener) -> None:
    store = open_store()
    store.claim("<m@x>", connection="c", holder="h", recipients=[])
    again = open_store()
    assert again.ledger_entry("<m@x>") is not None
    again._w("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)")  # type: ignore[attr-defined]
    with pytest.raises(StateError, match="newer release of mailconnector") as ei:
        open_store()
    assert exit_code_for(ei.value) == 8 and "settings.state" in (ei.value.hint or "")
