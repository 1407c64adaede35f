"""What every part of the benchmark shares: the result row, the code under test (a `Side`), and fresh subprocesses.

Every measurement runs in fresh subprocesses with its own temporary project (CONVEYOR_PROJECT_DIR) and
CONVEYOR_QUIET=1. Bytecode is cached in a private temporary directory (PYTHONPYCACHEPREFIX, and
PYTHONDONTWRITEBYTECODE dropped), so the numbers are those of a normal installation and nothing is written into the
source tree. A `Side` names the Conveyor under test: this checkout, or (`--compare REV`) another revision's `src/`
put first on PYTHONPATH, which wins over the editable install.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CURRENT",
    "HERE",
    "PYCACHE",
    "PYTHON",
    "Row",
    "Side",
    "cpu_steal",
    "env_for",
    "fmt",
    "fmt_range",
    "journal_less_ext4",
    "project",
    "remove_later",
    "remove_left",
    "run",
    "spread",
    "steal_share",
    "tree_peak_rss",
    "wall",
    "wall_rss",
]

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
PYCACHE = Path(tempfile.gettempdir(), f"conveyor-bench-pyc-{os.getpid()}")  # removed at the end of run.main()


@dataclass(frozen=True)
class Side:
    """The Conveyor under test: `src` None is this checkout (the editable install); else a revision's `src/`."""

    label: str
    src: Path | None = None


CURRENT = Side("this tree")


@dataclass
class Row:
    """One line of the result table; times in seconds, `target` an upper bound.

    `low`/`high`: the samples' min and max (the measured value is their median); `previous`: the same figure for
    the `--compare` revision; `reference`: ZenML's (measured live with ZENML_PYTHON, else recorded).
    """

    metric: str
    measured: float | None
    target: float | None
    reference: float | None
    note: str = ""
    unit: str = "s"  # "s": seconds; "x": a ratio; "B": bytes
    low: float | None = None
    high: float | None = None
    previous: float | None = None

    @property
    def verdict(self) -> str:
        if self.target is None or self.measured is None:
            return "info"
        return "PASS" if self.measured <= self.target else "MISS"


def spread(samples: list[float]) -> tuple[float, float, float]:
    """(median, min, max) of the samples."""
    return statistics.median(samples), min(samples), max(samples)


# -- formatting -----------------------------------------------------------------------------------

def fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "B":
        return f"{value / 1e6:.0f} MB"
    return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.2f} s"


def fmt_range(low: float | None, high: float | None, unit: str = "s") -> str:
    if low is None or high is None:
        return "-"
    return f"{fmt(low, unit)}–{fmt(high, unit)}"


# -- the machine ----------------------------------------------------------------------------------

def cpu_steal() -> tuple[int, int] | None:
    """(steal, all) clock ticks of every CPU since boot (/proc/stat); None where there is no such file. On a
    virtual machine, steal is the time its host gave this machine's CPUs to others: taken over a benchmark, it says
    how much of a slow figure was the host's doing rather than the code's."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(t) for t in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (ticks[7], sum(ticks[:8])) if len(ticks) >= 8 else None


def journal_less_ext4(path: str, mountinfo: str = "/proc/self/mountinfo", jbd2: str = "/proc/fs/jbd2") -> str | None:
    """The device name of the filesystem holding `path` when it is ext4 without a journal (it has no
    `/proc/fs/jbd2/DEVICE-*`), else None. There, creating files within minutes of deleting many costs several times
    more (docs/performance.md), so the report says when to run the benchmark again."""
    best: tuple[str, str, str] | None = None  # (mount point, type, source) of the deepest mount holding path
    try:
        with open(mountinfo) as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields, more = left.split(), right.split()
                if len(fields) < 5 or len(more) < 2:
                    continue
                point = fields[4].replace("\\040", " ")
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and (best is None or len(point) > len(best[0])):
                    best = (point, more[0], more[1])
    except OSError:
        return None
    if best is None or best[1] != "ext4":
        return None
    device = os.path.basename(best[2])
    try:
        journals = os.listdir(jbd2)
    except OSError:
        journals = []
    return None if any(j.startswith(f"{device}-") for j in journals) else device


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of all CPU time between two `cpu_steal` readings that the host took."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


# -- subprocesses ---------------------------------------------------------------------------------

def env_for(project_dir: Path, side: Side = CURRENT) -> dict[str, str]:
    """The environment of a measured process: its own project, quiet, bytecode cached privately."""
    env = {**os.environ, "CONVEYOR_PROJECT_DIR": str(project_dir), "CONVEYOR_QUIET": "1",
           "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    for var in ("CONVEYOR_STORE_URL", "CONVEYOR_STACK", "PYTHONDONTWRITEBYTECODE", "PYTHONPROFILEIMPORTTIME"):
        env.pop(var, None)
    if side.src is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(side.src), os.environ.get("PYTHONPATH")) if p)
    return env


def project() -> Path:
    """A new temporary project directory; the caller removes it (now, or with `remove_later`)."""
    return Path(tempfile.mkdtemp(prefix="conveyor-bench-"))


_LEFT: list[Path] = []


def remove_later(path: Path) -> None:
    """Remove `path` when the benchmark ends (`remove_left`), not between rows: deleting the tens of thousands of
    files a row's runs wrote costs the filesystem work that would land on the next row's figures."""
    _LEFT.append(path)


def remove_left() -> None:
    """Remove what `remove_later` kept."""
    while _LEFT:
        shutil.rmtree(_LEFT.pop(), ignore_errors=True)


def run(cmd: list[str], env: dict[str, str], cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run to completion; a failure raises with the process's output."""
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def wall(cmd: list[str], env: dict[str, str], cwd: str | Path | None = None) -> float:
    """Wall time of one process, start to exit."""
    t0 = time.perf_counter()
    run(cmd, env, cwd)
    return time.perf_counter() - t0


def wall_rss(cmd: list[str], env: dict[str, str], cwd: str | Path | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one process: wait4 reports that child's own ru_maxrss (KiB on Linux),
    which no other process of the benchmark inflates, unlike RUSAGE_CHILDREN's running maximum."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out.read().decode(errors='replace')}"
                               f"\n{err.read().decode(errors='replace')[-4000:]}")
    return elapsed, usage.ru_maxrss * 1024


def _children() -> dict[int, list[int]]:
    """ppid → pids of every process now running, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _hwm(pid: int) -> int:
    """A process's own peak RSS so far (VmHWM), in bytes; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def tree_peak_rss(cmd: list[str], env: dict[str, str], interval: float = 0.02) -> tuple[subprocess.CompletedProcess[str],
                                                                                          int]:
    """Run `cmd`, and the largest peak RSS (VmHWM) of any process in its tree, sampled every `interval` s.

    ru_maxrss only covers children that were waited for: a step operator's worker that outlives its step (or is
    killed at exit, unreaped) never shows there. VmHWM is a high-water mark, so sampling misses only processes that
    live less than an interval.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        peak = 0
        while proc.poll() is None:
            tree, todo = _children(), [proc.pid]
            while todo:
                pid = todo.pop()
                peak = max(peak, _hwm(pid))
                todo += tree.get(pid, [])
            time.sleep(interval)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(cmd, proc.returncode, out.read().decode(errors="replace"),
                                           err.read().decode(errors="replace"))
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-4000:]}")
    return done, peak
