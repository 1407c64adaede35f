"""How a duration reads to a person: the same words in the terminal, `run describe` and the dashboard."""

from __future__ import annotations

from datetime import timedelta

__all__ = ["fmt_duration"]


def fmt_duration(d: timedelta | float | None) -> str:
    """`0.42s`, `3m07s`, `2h05m00s`; `-` for no duration."""
    if d is None:
        return "-"
    seconds = d.total_seconds() if isinstance(d, timedelta) else float(d)
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s"
