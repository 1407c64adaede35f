"""What the dashboard's pages show, computed from the Client's views: the DAG's layout, the timeline's bars, a run's
totals. Plain data only (no web stack), so the server, `conveyor run report` and the tests share one computation."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from conveyor.utils.durations import fmt_duration

if TYPE_CHECKING:
    from conveyor.client import AttemptView, PipelineRun, StepRunView

__all__ = ["Bar", "Dag", "DagEdge", "DagNode", "Phase", "RunRow", "Timeline", "Totals", "dag_layout", "fmt_duration",
           "fmt_time", "outcome_of", "run_finished", "run_json", "run_row", "timeline", "totals", "utcnow", "where_of"]

#: statuses of a run that will not change any more (the page stops polling)
FINISHED = frozenset({"completed", "failed", "stopped", "cached", "skipped"})
#: the failure kinds (conveyor.enums.FailureKind) a timeline bar names by its outcome
_OUTCOMES = {"user": "user-error", "memory": "out-of-memory", "infrastructure": "preempted", "timeout": "timeout",
             "pending": "timeout", "stopped": "cancelled"}

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 180, 40, 70, 14, 10


def utcnow() -> datetime:
    """Naive UTC, like the store's timestamps."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def fmt_time(ts: datetime | None) -> str:
    return "-" if ts is None else ts.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


@dataclass(frozen=True)
class RunRow:
    """A row of the runs list, as the page draws it and as its JSON (`/api/runs`) sends it to the live list."""

    id: str
    name: str
    pipeline: str
    status: str
    stack: str
    started: str
    duration: str


def run_row(run: "PipelineRun", status: str, now: datetime) -> RunRow:
    """`status` is the shown one (`abandoned` included); a running run's duration runs up to `now`."""
    duration = fmt_duration((run.end_time or now) - run.start_time) if run.start_time else "-"
    return RunRow(run.id, run.name, run.pipeline_name, status, run.stack_name or "", fmt_time(run.start_time),
                  duration)


def run_finished(status: str) -> bool:
    return status in FINISHED


def where_of(step: "StepRunView") -> tuple[str, str]:
    """(`in-process` or the operator's name, the label shown: with the flavor, or `cached`)."""
    last = step.attempts[-1] if step.attempts else None
    operator = (last.operator if last and last.operator else None) or step.config.step_operator
    flavor = (last.operator_flavor if last and last.operator_flavor else None) or step.config.step_operator_flavor
    where = operator or "in-process"
    label = f"{operator} ({flavor})" if operator and flavor else where
    if step.status == "cached":
        label = f"cached · {label}"
    return where, label


def outcome_of(status: str, failure_kind: str | None) -> str:
    """The timeline's colour class: completed, user-error, out-of-memory, preempted, timeout, cancelled, ..."""
    if status == "failed":
        return _OUTCOMES.get(failure_kind or "", "failed")
    if status == "stopped":
        return "cancelled"
    return status or "pending"


# -- the DAG -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DagNode:
    name: str
    status: str
    where: str
    label: str
    x: int
    y: int
    layer: int


@dataclass(frozen=True)
class DagEdge:
    source: str
    target: str
    path: str  # SVG path data


@dataclass(frozen=True)
class Dag:
    nodes: list[DagNode]
    edges: list[DagEdge]
    width: int
    height: int
    node_w: int = NODE_W
    node_h: int = NODE_H


def layers_of(steps: "dict[str, StepRunView]") -> dict[str, int]:
    """Longest-path layering: a step sits one layer right of its furthest upstream step (unknown names ignored)."""
    layer: dict[str, int] = {}
    for start in steps:
        stack = [start]
        while stack:  # iterative: a 1,000-step chain must not hit the recursion limit
            name = stack[-1]
            if name in layer:
                stack.pop()
                continue
            pending = [u for u in steps[name].upstream if u in steps and u not in layer and u not in stack]
            if pending:
                stack.extend(pending)
                continue
            ups = [layer[u] for u in steps[name].upstream if u in layer]
            layer[name] = 1 + max(ups) if ups else 0
            stack.pop()
    return layer


def dag_layout(run: "PipelineRun") -> Dag:
    """Left to right by layer; within a layer, ordered by the mean row of each step's upstream (fewer crossings)."""
    steps = run.steps
    layer = layers_of(steps)
    columns: dict[int, list[str]] = {}
    for name in steps:
        columns.setdefault(layer[name], []).append(name)
    row: dict[str, float] = {}
    for col in sorted(columns):
        names = columns[col]
        order = {n: i for i, n in enumerate(names)}

        def key(n: str) -> tuple[float, int]:
            ups = [row[u] for u in steps[n].upstream if u in row]
            return (sum(ups) / len(ups) if ups else -1.0, order[n])

        names.sort(key=key)
        for i, n in enumerate(names):
            row[n] = i
    nodes, pos = [], {}
    for name, step in steps.items():
        x = PAD + layer[name] * (NODE_W + GAP_X)
        y = PAD + int(row[name]) * (NODE_H + GAP_Y)
        where, label = where_of(step)
        nodes.append(DagNode(name, str(step.status), where, label, x, y, layer[name]))
        pos[name] = (x, y)
    edges = []
    for name, step in steps.items():
        for up in step.upstream:
            if up not in pos:
                continue
            (x1, y1), (x2, y2) = pos[up], pos[name]
            sx, sy, tx, ty = x1 + NODE_W, y1 + NODE_H // 2, x2, y2 + NODE_H // 2
            mid = (sx + tx) // 2
            edges.append(DagEdge(up, name, f"M{sx},{sy} C{mid},{sy} {mid},{ty} {tx},{ty}"))
    width = PAD * 2 + (max(layer.values(), default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max((len(c) for c in columns.values()), default=1) * (NODE_H + GAP_Y) - GAP_Y
    return Dag(nodes, edges, width, height)


# -- the timeline --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Phase:
    kind: str  # queued, running, publishing
    left: float  # percent of the timeline's span
    width: float
    title: str


@dataclass(frozen=True)
class Bar:
    step: str
    attempt: int
    outcome: str
    left: float
    width: float
    phases: list[Phase]
    title: str


@dataclass
class Timeline:
    span: timedelta
    groups: list[tuple[str, list[Bar]]] = field(default_factory=list)  # (where it ran, bars), in order of start


@dataclass(frozen=True)
class _Try:
    step: "StepRunView"
    number: int
    status: str
    failure_kind: str | None
    submitted: datetime | None
    started: datetime | None
    finished: datetime | None
    published: datetime | None
    queue_reason: str | None
    where: str


def _tries(step: "StepRunView") -> list[_Try]:
    """Its attempts; a step recorded without attempts is one try from its start to its end."""
    where = where_of(step)[1].removeprefix("cached · ")
    if step.attempts:
        out = []
        for a in step.attempts:
            label = f"{a.operator} ({a.operator_flavor})" if a.operator and a.operator_flavor else (a.operator or where)
            out.append(_Try(step, a.number, str(a.status), a.failure_kind, a.submitted or a.queued or a.started,
                            a.started, a.finished, a.published, a.queue_reason, label))
        return out
    if step.start_time is None:
        return []
    return [_Try(step, step.attempt or 1, str(step.status), step.failure_kind, step.start_time, step.start_time,
                 step.end_time, None, None, where)]


def _attempt_phases(t: _Try, now: datetime) -> list[tuple[str, datetime, datetime, str]]:
    phases = []
    start = t.submitted or t.started
    if start and t.started and t.started > start:
        phases.append(("queued", start, t.started, f"queued {fmt_duration(t.started - start)}"
                       + (f": {t.queue_reason}" if t.queue_reason else "")))
    elif start and not t.started:
        end = t.finished or now
        phases.append(("queued", start, end, "queued" + (f": {t.queue_reason}" if t.queue_reason else "")))
    if t.started:
        end = t.finished or now
        phases.append(("running", t.started, end, f"running {fmt_duration(end - t.started)}"))
    if t.finished and t.published and t.published > t.finished:
        phases.append(("publishing", t.finished, t.published,
                       f"publishing outputs {fmt_duration(t.published - t.finished)}"))
    return phases


def timeline(run: "PipelineRun", now: datetime | None = None) -> Timeline:
    """One bar per attempt, split into queued / running / publishing, grouped by where it ran."""
    now = now or utcnow()
    tries = [t for s in run.steps.values() if s.status != "cached" for t in _tries(s)]
    starts = [t.submitted or t.started for t in tries if t.submitted or t.started]
    origin = min([run.start_time, *starts] if run.start_time else starts, default=now)
    ends = [p[2] for t in tries for p in _attempt_phases(t, now)]
    end = max([run.end_time or now, *ends])
    span = max(end - origin, timedelta(milliseconds=1))

    def pct(ts: datetime) -> float:
        return round(100.0 * (ts - origin) / span, 3)

    groups: dict[str, list[Bar]] = {}
    for t in sorted(tries, key=lambda t: t.submitted or t.started or now):
        phases = _attempt_phases(t, now)
        if not phases:
            continue
        left, right = pct(phases[0][1]), pct(phases[-1][2])
        outcome = outcome_of(t.status, t.failure_kind)
        bar = Bar(t.step.name, t.number, outcome, left, max(right - left, 0.15),
                  [Phase(kind, pct(a), max(pct(b) - pct(a), 0.0), title) for kind, a, b, title in phases],
                  f"{t.step.name} attempt {t.number}: {outcome} · " + " · ".join(p[3] for p in phases))
        groups.setdefault(t.where, []).append(bar)
    return Timeline(span, list(groups.items()))


# -- totals ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Totals:
    wall: timedelta | None
    queued: timedelta
    attempts: int
    retries: int
    steps: int
    by_status: dict[str, int]


def totals(run: "PipelineRun", now: datetime | None = None) -> Totals:
    now = now or utcnow()
    queued, attempts, retries = timedelta(), 0, 0
    by_status: dict[str, int] = {}
    for step in run.steps.values():
        by_status[str(step.status)] = by_status.get(str(step.status), 0) + 1
        tries = _tries(step) if step.status != "cached" else []
        attempts += len(tries)
        retries += max(len(tries) - 1, 0)
        for t in tries:
            start = t.submitted or t.started
            if start:
                queued += (t.started or t.finished or now) - start
    wall = (run.end_time or now) - run.start_time if run.start_time else None
    return Totals(wall, queued, attempts, retries, len(run.steps), by_status)


# -- JSON for the page's polling -------------------------------------------------------------------------------
def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() + "Z" if ts else None


def attempt_json(a: "AttemptView") -> dict[str, Any]:
    return {"number": a.number, "status": str(a.status), "failure_kind": a.failure_kind,
            "outcome": outcome_of(str(a.status), a.failure_kind), "submitted": _iso(a.submitted),
            "queued": _iso(a.queued), "queue_reason": a.queue_reason, "started": _iso(a.started),
            "finished": _iso(a.finished), "published": _iso(a.published), "backend_job_id": a.backend_job_id,
            "host": a.host, "operator": a.operator, "operator_flavor": a.operator_flavor, "error": a.error}


def run_json(run: "PipelineRun", status: str) -> dict[str, Any]:
    """The run for `/api/runs/<id>`: its status and each step's, with attempts and where they ran."""
    t = totals(run)
    return {"id": run.id, "name": run.name, "pipeline": run.pipeline_name, "status": status,
            "finished": run_finished(status), "stack": run.stack_name, "start_time": _iso(run.start_time),
            "end_time": _iso(run.end_time),
            "totals": {"wall_s": t.wall.total_seconds() if t.wall else None, "queued_s": t.queued.total_seconds(),
                       "attempts": t.attempts, "retries": t.retries},
            "steps": [{"name": name, "status": str(s.status), "where": where_of(s)[0], "label": where_of(s)[1],
                       "attempt": s.attempt, "failure_kind": s.failure_kind, "upstream": list(s.upstream),
                       "start_time": _iso(s.start_time), "end_time": _iso(s.end_time),
                       "attempts": [attempt_json(a) for a in s.attempts]} for name, s in run.steps.items()]}
