"""Parsing of human-written memory sizes and durations.

Kept free of pydantic so the remote entrypoint and the CLI can use it cheaply.
"""

from __future__ import annotations

import math
import re

MEMORY_UNITS: dict[str, int] = {
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15,
    "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "PIB": 2**50,
    "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40, "PI": 2**50,
}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP](?:i?B?|IB|I)?)\s*$", re.IGNORECASE)
#: the largest memory limit a 64-bit cgroup or rlimit can hold
MAX_MEMORY_BYTES = 2**63 - 1
MEMORY_FORMS = '"32GB", "32G", "32Gi", "32GiB", "1.5GB", "512MB", "512MiB", "512Mi", "2TB" (units KB/MB/GB/TB/PB decimal, KiB/MiB/GiB/TiB/PiB binary; "Gi"/"G" shorthands allowed)'


def parse_memory(value: str | int) -> int:
    """Return a memory size in bytes; plain ints are bytes."""
    if isinstance(value, bool):
        raise ValueError(f"invalid memory size {value!r}: expected a string such as {MEMORY_FORMS}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"memory must be positive, got {value}")
        return _bounded(value, value)
    m = _MEMORY_RE.match(str(value))
    if not m:
        raise ValueError(f"invalid memory size {value!r}: accepted forms are {MEMORY_FORMS}")
    number, unit = float(m.group(1)), m.group(2).upper()
    factor = MEMORY_UNITS.get(unit)
    if factor is None:
        raise ValueError(f"invalid memory unit in {value!r}: accepted forms are {MEMORY_FORMS}")
    if not math.isfinite(number * factor):  # "1e400"-long digit strings overflow a float
        raise ValueError(f"memory must be a finite size, got {_short(value)}: accepted forms are {MEMORY_FORMS}")
    size = int(number * factor)
    if size <= 0:
        raise ValueError(f"memory must be positive, got {value!r}: accepted forms are {MEMORY_FORMS}")
    return _bounded(size, value)


def _bounded(size: int, value: str | int) -> int:
    """Limits go to cgroups, RLIMIT_AS and schedulers as 64-bit numbers: a larger size is a typo, not a request."""
    if size > MAX_MEMORY_BYTES:
        raise ValueError(f"memory {_short(value)} is more than 8 EiB, larger than any "
                         f"machine: check the number and the unit (accepted forms are {MEMORY_FORMS})")
    return size


def _short(value: str | int) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}... ({len(str(value))} characters)"


def format_bytes(n: int) -> str:
    """Shortest binary-unit spelling that keeps three significant digits."""
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= factor:
            return f"{n / factor:.3g}{unit}"
    return f"{n}B"


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_FORMS = 'seconds as a number, or "90s", "30m", "2h", "1h30m", "1d", "250ms"'


def parse_duration(value: str | int | float) -> float:
    """Return a duration in seconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: accepted forms are {DURATION_FORMS}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"duration must be a positive, finite number of seconds, got {value}")
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    try:
        seconds = float(text)
    except ValueError:
        pos, seconds = 0, 0.0
        for m in _DURATION_RE.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
            pos = m.end()
        if pos != len(text) or not text:
            raise ValueError(f"invalid duration {value!r}: accepted forms are {DURATION_FORMS}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"duration must be a positive, finite number of seconds, got {value!r}: "
                         f"accepted forms are {DURATION_FORMS}")
    return seconds
