"""The hand-off between Read Email's reading thread and its taker: order, bounds, and closing."""

from __future__ import annotations

import threading
import time

from mailconnector.activities._handoff import Handoff


def _put_in_thread(handoff: Handoff[str], entry: str, size: int) -> tuple[threading.Thread, list[bool]]:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(handoff.put(entry, size)), daemon=True)
    thread.start()
    return thread, result


def test_entries_come_out_in_order() -> None:
    handoff: Handoff[int] = Handoff(max_entries=100, max_bytes=1000)
    for n in range(10):
        assert handoff.put(n, 1)
    assert [handoff.get() for _ in range(10)] == list(range(10))


def test_a_full_handoff_holds_the_producer_until_an_entry_is_taken() -> None:
    handoff: Handoff[str] = Handoff(max_entries=2, max_bytes=1000)
    assert handoff.put("a") and handoff.put("b")
    thread, result = _put_in_thread(handoff, "c", 0)
    thread.join(0.3)
    assert thread.is_alive() and result == []  # two entries: no room for a third
    assert handoff.get() == "a"
    thread.join(5)
    assert result == [True]
    assert [handoff.get(), handoff.get()] == ["b", "c"]


def test_the_byte_budget_holds_the_producer_and_a_bigger_entry_goes_alone() -> None:
    handoff: Handoff[str] = Handoff(max_entries=100, max_bytes=100)
    assert handoff.put("huge", 500)  # bigger than the budget, but the hand-off is empty: it goes through
    thread, result = _put_in_thread(handoff, "small", 1)
    thread.join(0.3)
    assert thread.is_alive() and result == []  # 500 bytes are waiting: nothing more until they are taken
    assert handoff.get() == "huge"
    thread.join(5)
    assert result == [True] and handoff.get() == "small"
    assert handoff.put("x", 60)
    thread, result = _put_in_thread(handoff, "y", 60)  # 120 bytes would not fit in 100
    thread.join(0.3)
    assert thread.is_alive()
    assert handoff.get() == "x"
    thread.join(5)
    assert result == [True]


def test_closing_releases_a_waiting_producer_and_refuses_more() -> None:
    handoff: Handoff[str] = Handoff(max_entries=1, max_bytes=1000)
    assert handoff.put("a")
    thread, result = _put_in_thread(handoff, "b", 0)
    time.sleep(0.1)
    handoff.close()
    thread.join(5)
    assert not thread.is_alive() and result == [False]
    assert handoff.closed
    assert handoff.put("c") is False
