"""The benchmark's own pieces (bench/, `make bench`), run small: its workload scripts run real pipelines, the store
seeding for the `conveyor run list` row goes through the store's public methods, and the table shows medians,
min-max and the `--compare` revision's figures. Speed itself is never asserted here (bench/ does that)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
MODULES = ("common", "report", "rows_core")


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    """bench/'s modules, imported from its folder; forgotten again afterwards (their names are generic)."""
    monkeypatch.syspath_prepend(str(BENCH))
    for name in MODULES:
        sys.modules.pop(name, None)
    yield {name: importlib.import_module(name) for name in MODULES}
    for name in MODULES:
        sys.modules.pop(name, None)


def _script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_fan_out_and_seeded_runs_are_listed(conveyor_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """bench/fan_out.py runs its pipeline (one step feeding N), and bench/seed_runs.py fills the store with N
    finished runs that `conveyor run list` shows, as the 10,000-run row needs."""
    _script(str(BENCH / "fan_out.py"), "5", "--sleep", "0.01")
    _script(str(BENCH / "seed_runs.py"), "25")
    runs = json.loads(conveyor_cli("run", "list", "-n", "100", "--output", "json").stdout)
    assert len(runs) == 26
    assert {r["pipeline"] for r in runs} == {"bench_fan_out_5", "one_step"}
    assert {r["status"] for r in runs} == {"completed"}


def test_rows_show_median_range_previous_and_verdict(bench: dict[str, ModuleType]) -> None:
    """A figure's row is the median of its samples with their min-max, the compared revision's median beside it,
    and a verdict against the target; a skipped figure is an info row that says why."""
    rows_core, report = bench["rows_core"], bench["report"]
    cfg = rows_core.CoreConfig(runs=5, sizes=[1, 10], fan_width=50, listed_runs=100, big=False)

    def side(scale: float) -> dict[str, object]:
        five = [scale * x for x in (1.0, 2.0, 3.0, 4.0, 10.0)]
        return {"import": {"bare": [0.01] * 5, "import": [0.02] * 5, "sdk": [0.05] * 5}, "fixed": five,
                "slope": [0.001 * x for x in five], "local_per_step": five, "local_extra": [0.1 * x for x in five],
                "whole": [0.05 * x for x in five], "whole_first": [scale], "sleepers": [1.0 + 0.1 * x for x in five],
                "run_list": [0.05 * x for x in five], "fan_out": five, "fan_out_rss": [50e6] * 5,
                "ndarray": {"skipped": "skipped (--no-big)"}}

    rows = {r.metric: r for r in report.core_rows({"now": side(1.0), "old": side(2.0)}, "now", "old", cfg, None)}
    whole = rows["1-step pipeline, whole process"]
    assert (whole.measured, whole.low, whole.high) == pytest.approx((0.15, 0.05, 0.5))
    assert whole.previous == pytest.approx(0.3)
    assert whole.verdict == "PASS"  # 0.15 s ≤ 0.30 s
    assert rows["per step, in process (slope)"].verdict == "PASS"
    assert rows["20 × 1 s sleeping steps in parallel, whole process"].verdict == "PASS"
    assert rows["extra per step through `local` (chain of 20)"].verdict == "MISS"  # 300 ms > 60 ms
    assert rows["1 GiB ndarray from one step to the next"].note == "skipped (--no-big)"
    first = rows["1-step pipeline, whole process, first run"]
    assert (first.low, first.high) == (None, None)  # one sample: no range


def test_least_squares_slope_and_peak_rss(bench: dict[str, ModuleType]) -> None:
    """The per-step figure is the fitted slope; a whole process's peak RSS is that child's own (wait4)."""
    rows_core, common = bench["rows_core"], bench["common"]
    assert rows_core.least_squares_slope([1, 10, 100], [0.5 + 0.002 * n for n in (1, 10, 100)]) == \
        pytest.approx(0.002)
    touch_200_mib = "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096])"
    seconds, rss = common.wall_rss([sys.executable, "-c", touch_200_mib], {"PATH": "/usr/bin:/bin"})
    assert rss >= 200 * 1024 * 1024
    assert seconds > 0


def test_tree_peak_counts_a_child_never_waited_for(bench: dict[str, ModuleType]) -> None:
    """The hand-off's peak RSS covers a worker process that its parent never reaps (as a `local` step operator's
    warm worker), which ru_maxrss misses."""
    common = bench["common"]
    grandchild = "b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); print('ready', flush=True); input()"
    parent = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {grandchild!r}], "
              "stdin=subprocess.PIPE, stdout=subprocess.PIPE); p.stdout.readline(); time.sleep(0.5); p.kill(); "
              "import resource; print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done, peak = common.tree_peak_rss([sys.executable, "-c", parent], {"PATH": "/usr/bin:/bin"})
    assert int(done.stdout) * 1024 < 200 * 1024 * 1024  # never waited for: not in ru_maxrss
    assert peak >= 200 * 1024 * 1024


def test_cpu_steal_is_read_from_proc_stat_and_shared_out(bench: dict[str, ModuleType]) -> None:
    """The report's 'CPU steal' is the host's share of all CPU time between two readings of /proc/stat's cpu line
    (its 8th figure); a reading that did not advance, or none at all, gives no share rather than a wrong one."""
    common = bench["common"]
    first = common.cpu_steal()
    assert first is not None and 0 <= first[0] <= first[1]
    with open("/proc/stat") as fh:
        ticks = [int(t) for t in fh.readline().split()[1:]]
    assert ticks[7] >= first[0] and sum(ticks[:8]) >= first[1]
    assert common.steal_share((100, 1000), (130, 1200)) == pytest.approx(0.15)
    assert common.steal_share((100, 1000), (100, 1000)) is None
    assert common.steal_share(None, first) is None


def test_a_journal_less_ext4_is_told_from_a_journalled_one_and_from_other_filesystems(
        bench: dict[str, ModuleType], tmp_path: Path) -> None:
    """The report's ext4 note: the deepest mount holding the path decides, and an ext4 counts as journal-less
    only when /proc/fs/jbd2 has no DEVICE-* entry for it."""
    common = bench["common"]
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n"
        "30 27 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw\n"
        "31 27 8:1 / /data rw,relatime - ext4 /dev/sdb1 rw\n"
        "32 27 8:2 / /my\\040disk rw,relatime - ext4 /dev/sdc rw\n")
    jbd2 = tmp_path / "jbd2"
    (jbd2 / "sdb1-8").mkdir(parents=True)

    def check(path: str) -> str | None:
        return common.journal_less_ext4(path, str(mountinfo), str(jbd2))

    assert check("/tmp/x") == "vda"  # the root's ext4, no journal
    assert check("/dev/shm/x") is None  # tmpfs
    assert check("/data/x") is None  # ext4 with a journal
    assert check("/database") == "vda"  # not below /data: the root's
    assert check("/my disk/x") == "sdc"  # a mount point with a space, as mountinfo escapes it
    assert common.journal_less_ext4("/x", str(tmp_path / "missing"), str(jbd2)) is None
