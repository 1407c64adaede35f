"""Process-table helpers used to make sure nothing a step started is left running.

A pid alone does not name a process: Linux hands a freed pid to the next process (pid_max is often 32768), so a
stored pid is always kept with the process's start time (`process_start`) and checked with `same_process` before
anything is signalled.
"""

from __future__ import annotations

import os
import signal
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

__all__ = ["alive", "boot_id", "descendants", "interrupt", "kill_group", "kill_pids", "kill_tree", "pids_with_marker",
           "process_start", "same_process", "start_ticks"]


@lru_cache(maxsize=1)
def boot_id() -> str:
    """This boot of the kernel: start times (clock ticks since boot) restart at every boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses): field 3 is index 0."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def process_start(pid: int) -> str | None:
    """`<boot id>:<start ticks>` of a running process: with its pid, it names that process and no other."""
    ticks = start_ticks(pid)
    return None if ticks is None else f"{boot_id()}:{ticks}"


def same_process(pid: int | None, start: str | None) -> bool:
    """Whether `pid` still runs the process recorded with start `start`.

    A pid now held by another process (another start time, or another boot) is the recorded process gone.
    Records from before start times were kept (`start` None) fall back to the pid alone."""
    if not pid or not alive(int(pid)):
        return False
    return start is None or process_start(int(pid)) == start


def pids_with_marker(marker: str) -> list[int]:
    """PIDs whose command line contains `marker` (Linux /proc)."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is as good as dead
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def interrupt(proc: "subprocess.Popen[Any]", grace: float) -> None:
    """Stop a child as ^C in its terminal would (SIGINT), then SIGKILL it should it not exit within `grace` s."""
    import subprocess  # noqa: F811 - at run time too, for TimeoutExpired

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kill_group(pgid: int, grace: float = 2.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 1.0)
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return
            time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def kill_pids(pids: list[int], grace: float = 2.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in pids):
            time.sleep(0.02)


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from one pass over /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and fields[0] != "Z":
                tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def descendants(roots: list[int]) -> set[int]:
    """Every live process below `roots` (not the roots themselves)."""
    tree = _children()
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _group_members(pgid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and fields[0] != "Z" and int(fields[2]) == pgid:
                found.add(int(entry.name))
    return found


def kill_tree(pid: int, start: str | None, grace: float = 2.0) -> None:
    """End process `pid` (if it still is the one that started at `start`), its process group and every
    descendant, also those that left the group with setsid.

    Every process seen is remembered with its start time, so one that is orphaned on the way (re-parented to
    init when its parent dies) is still ended, and a pid reused meanwhile is never signalled. Each round stops
    the whole tree first (SIGSTOP), so nothing forks past the kill; SIGTERM first, SIGKILL after `grace`."""
    if not same_process(pid, start):
        if alive(pid):  # the pid belongs to another process now: our group is gone too (its pgid would pin it)
            return
        seen: dict[int, str | None] = {}
    else:
        seen = {pid: process_start(pid)}

    def collect() -> list[int]:
        for p in list(seen):
            if not same_process(p, seen[p]):
                del seen[p]
        roots = list(seen)
        for p in _group_members(pid) | descendants(roots):
            if p not in seen and p != os.getpid():
                seen[p] = process_start(p)
        return [p for p in seen if same_process(p, seen[p])]

    def signal_all(pids: list[int], sig: int) -> None:
        for p in pids:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def freeze() -> list[int]:
        frozen: set[int] = set()
        for _ in range(20):  # until a pass finds nobody new
            pids = collect()
            new = [p for p in pids if p not in frozen]
            if not new:
                break
            signal_all(new, signal.SIGSTOP)
            frozen.update(new)
        return collect()

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        pids = freeze()
        if not pids:
            return
        signal_all(pids, sig)
        signal_all(pids, signal.SIGCONT)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not collect():
                return
            time.sleep(0.02)
