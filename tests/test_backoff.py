"""The one backoff: waits double up to a ceiling, each within its jitter, and a reset starts over."""
from __future__ import annotations

from dbackd.core.backoff import JITTER, Backoff


def test_waits_double_up_to_the_ceiling_within_their_jitter():
    backoff = Backoff(0.5, 3.0)
    waits = [backoff.next() for _ in range(6)]
    for wait, delay in zip(waits, [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]):
        assert delay * (1 - JITTER) <= wait <= delay * (1 + JITTER)
    backoff.reset()
    assert backoff.next() <= 0.5 * (1 + JITTER)


def test_a_loop_may_go_on_from_a_delay_it_kept():
    backoff = Backoff(1.0, 60.0, delay=8.0)
    assert 8.0 * (1 - JITTER) <= backoff.next() <= 8.0 * (1 + JITTER) and backoff.delay == 16.0
