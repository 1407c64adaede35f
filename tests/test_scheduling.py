"""The local orchestrator's scheduling (issue 15): every ready step starts unless a cap is set, order and
skipping follow the DAG for any shape, and the topological order is the one the definition implies."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor import pipeline, step
from conveyor.exceptions import PipelineDefinitionError, RunFailedError
from conveyor.pipelines.compiler import topological_order

WIDE = 20
#: every one of WIDE steps waits here until all WIDE are inside: they can only finish if all run at once
_GATE = threading.Barrier(WIDE, timeout=30)


@step
def seed() -> int:
    return 1


@step
def gather(x: int, tag: int) -> int:
    _GATE.wait()  # raises BrokenBarrierError (the step fails) unless every sibling is running too
    return x + tag


@step
def boom(x: int) -> int:
    raise ValueError("no")


@step
def after(x: int) -> int:
    return x


def test_every_ready_step_starts_at_once_without_a_cap() -> None:
    """20 ready steps with no max_parallelism set: all 20 run together (the default used to cap at 16)."""
    _GATE.reset()

    @pipeline(enable_cache=False)
    def wide() -> None:
        s = seed()
        for i in range(WIDE):
            gather(s, tag=i)

    run = wide()
    assert run.status == "completed"
    assert sorted(s.outputs["output"].load() for n, s in run.steps.items() if n.startswith("gather")) == \
        [1 + i for i in range(WIDE)]


def test_a_failure_skips_exactly_its_descendants_in_a_wide_dag() -> None:
    """A failed step's whole subtree is skipped, siblings and their subtrees complete (the scheduler looks only at
    steps downstream of one that ended)."""

    @pipeline(enable_cache=False)
    def tree() -> None:
        s = seed()
        bad = boom(s)
        after(after(bad, id="bad_child"), id="bad_grandchild")
        for i in range(30):
            after(after(s, id=f"ok_{i}"), id=f"ok_child_{i}")

    with pytest.raises(RunFailedError):
        tree()
    from conveyor import Client

    run = Client().get_pipeline_run("latest")
    statuses = {n: str(s.status) for n, s in run.steps.items()}
    assert statuses.pop("boom") == "failed"
    assert statuses.pop("bad_child") == "skipped" and statuses.pop("bad_grandchild") == "skipped"
    assert set(statuses.values()) == {"completed"} and len(statuses) == 61


def _reference_order(upstream: dict[str, list[str]]) -> list[str] | None:
    """The level-by-level order as first written (quadratic, plainly right); None for a cycle."""
    remaining = {n: set(ups) for n, ups in upstream.items()}
    order: list[str] = []
    while True:
        ready = [n for n, ups in remaining.items() if not ups]
        if not ready:
            break
        for n in ready:
            order.append(n)
            del remaining[n]
        for ups in remaining.values():
            ups.difference_update(ready)
    return None if remaining else order


@st.composite
def graphs(draw: Any) -> dict[str, list[str]]:
    """Random graphs over up to 12 nodes in a shuffled definition order, with or without cycles."""
    n = draw(st.integers(1, 12))
    names = draw(st.permutations([f"s{i}" for i in range(n)]))
    return {name: draw(st.lists(st.sampled_from(names), max_size=4)) if n > 1 else [] for name in names}


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_topological_order_matches_the_level_by_level_definition(upstream: dict[str, list[str]]) -> None:
    expected = _reference_order(upstream)
    if expected is None:
        with pytest.raises(PipelineDefinitionError, match="cycle"):
            topological_order("p", upstream)
    else:
        assert topological_order("p", upstream) == expected
