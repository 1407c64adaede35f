"""bench/dashboard.py run small: its three figures come from real runs (a fan-out's page, a seeded runs list, a live
`local` step's log read over SSE from a real `conveyor dashboard`), and its rows carry targets. Speed itself is never
asserted here (bench/ does that)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench_dashboard(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("common", "dashboard"):
        sys.modules.pop(name, None)
    yield importlib.import_module("dashboard")
    for name in ("common", "dashboard"):
        sys.modules.pop(name, None)


def test_the_dashboard_rows_are_measured_on_real_runs(bench_dashboard: ModuleType) -> None:
    said: list[str] = []
    data = bench_dashboard.measure_dashboard(2, said.append, steps=12, listed=30)
    assert len(data["page"]) == 2 and len(data["list"]) == 2 and len(data["latency"]) >= 3
    assert all(0 < s < 60 for key in ("page", "list", "latency") for s in data[key])
    rows = {r.metric: r for r in bench_dashboard.dashboard_rows(data)}
    assert rows["dashboard: run page of a 12-step run (server time)"].target == 1.0
    assert rows["dashboard: runs list with 30 runs"].target == 0.300
    latency = rows["dashboard: live log latency print → SSE client"]
    assert latency.target == 1.0 and latency.verdict in ("PASS", "MISS")
    assert any("latency" in line for line in said)


def test_a_skipped_measurement_is_an_info_row_that_says_why(bench_dashboard: ModuleType) -> None:
    rows = bench_dashboard.dashboard_rows({"skipped": "skipped (--no-dashboard)"})
    assert len(rows) == 3 and {r.verdict for r in rows} == {"info"}
    assert {r.note for r in rows} == {"skipped (--no-dashboard)"}
