"""The one rule for waits between attempts."""

from __future__ import annotations

from mailconnector._backoff import Backoff


def test_delays_double_up_to_the_most_and_start_again_after_a_reset() -> None:
    backoff = Backoff(1.0, 10.0)
    assert [backoff.next() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    backoff.reset()
    assert [backoff.next() for _ in range(2)] == [1.0, 2.0]


def test_jitter_stays_within_half_and_one_and_a_half_of_each_step() -> None:
    backoff = Backoff(0.5, 3.0, jitter=True)
    steps = [0.5, 1.0, 2.0, 3.0, 3.0]
    for _ in range(50):
        backoff.reset()
        delays = [backoff.next() for _ in steps]
        assert all(0.5 * step <= delay <= 1.5 * step for step, delay in zip(steps, delays, strict=True))
    assert len({Backoff(1.0, 1.0, jitter=True).next() for _ in range(20)}) > 1  # drawn, not fixed


def test_a_zero_first_delay_retries_at_once() -> None:
    backoff = Backoff(0.0, 30.0, jitter=True)
    assert [backoff.next() for _ in range(3)] == [0.0, 0.0, 0.0]
