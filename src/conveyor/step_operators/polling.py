"""How often a step's job is polled: the first wait is `POLL_START`, each next one `POLL_GROWTH` times longer, up to
the operator's `poll_interval`. A short job is noticed soon after it ends; a long one costs one poll per interval."""

from __future__ import annotations

__all__ = ["POLL_GROWTH", "POLL_START", "next_poll_delay", "poll_gap_at"]

#: the first wait between two status polls
POLL_START = 0.05
#: how much longer each next wait is, until it reaches the operator's `poll_interval`
POLL_GROWTH = 1.5


def next_poll_delay(delay: float, interval: float) -> float:
    """The wait after one of `delay` seconds."""
    return min(delay * POLL_GROWTH, interval)


def poll_gap_at(age: float, interval: float) -> float:
    """The wait this schedule has reached `age` seconds after its first poll. The polls fall at
    t_k = POLL_START (g^k - 1) / (g - 1) with gaps POLL_START g^k, so the gap at t_k is POLL_START + (g - 1) t_k."""
    return min(interval, POLL_START + (POLL_GROWTH - 1) * max(age, 0.0))
