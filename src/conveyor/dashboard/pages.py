"""The dashboard's pages as HTML strings, from the Client's views: shared by the server and `conveyor run report`.

Jinja2 with autoescape always on: a run's error, a log line or a parameter holding `<script>` is shown as text."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from conveyor.dashboard import model
from conveyor.dashboard.previews import preview

if TYPE_CHECKING:
    from jinja2 import Environment

    from conveyor.client import ArtifactView, Client, PipelineRun, StackView, StepRunView

__all__ = ["HERE", "PAGE_SIZE", "RunsQuery", "render", "run_context", "run_rows", "runs_context", "shown_status",
           "stacks_context", "step_context", "artifact_context"]

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
RUN_STATUSES = ("running", "completed", "failed", "stopped", "abandoned")


@cache
def environment() -> "Environment":
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["urlq"] = lambda value: quote(str(value), safe="")
    env.filters["duration"] = model.fmt_duration
    env.filters["time"] = model.fmt_time
    env.filters["short"] = _short
    env.filters["mb"] = lambda n: "-" if n is None else f"{n / 1024 / 1024:.1f} MB"
    return env


def render(template: str, **context: Any) -> str:
    """One page; `inline` (the report) inlines the CSS and JS instead of linking /static/."""
    inline = context.pop("inline", False)
    assets = {"css": (HERE / "static" / "dashboard.css").read_text(), "js": (HERE / "static" / "dashboard.js").read_text()} \
        if inline else {"css": "", "js": ""}
    context.setdefault("flash", None)
    context.setdefault("csrf", "")
    return environment().get_template(template).render(inline=inline, **assets, **context)


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown_status(client: "Client", run: "PipelineRun") -> str:
    """The stored status, `abandoned` for a running run whose orchestrator is gone (as `conveyor run list`)."""
    from conveyor.execution.liveness import shown_status as shown

    return shown(run, client.store)


# -- runs list -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunsQuery:
    pipeline: str | None = None
    status: str | None = None
    stack: str | None = None
    operator: str | None = None
    page: int = 1

    @classmethod
    def from_params(cls, params: Any) -> "RunsQuery":
        def get(key: str) -> str | None:
            value = (params.get(key) or "").strip()
            return value or None

        try:
            page = max(int(params.get("page") or 1), 1)
        except ValueError:
            page = 1
        status = get("status")
        return cls(get("pipeline"), status if status in RUN_STATUSES else None, get("stack"), get("operator"), page)

    def link(self, **changes: Any) -> str:
        values = {"pipeline": self.pipeline, "status": self.status, "stack": self.stack, "operator": self.operator,
                  "page": self.page, **changes}
        kept = {k: v for k, v in values.items() if v and not (k == "page" and v == 1)}
        return "/?" + urlencode(kept) if kept else "/"


def list_runs(client: "Client", q: RunsQuery) -> tuple[list[tuple["PipelineRun", str]], bool]:
    """One page of runs with their shown status, and whether there is a next page."""
    filters = {"stack": q.stack, "operator": q.operator}
    if q.status in ("running", "abandoned"):
        # `abandoned` is shown, never stored: read the running ones and keep those with that shown status
        running = [(r, shown_status(client, r)) for r in client.list_pipeline_runs(q.pipeline, "running", None, **filters)]
        matching = [x for x in running if x[1] == q.status]
        start = (q.page - 1) * PAGE_SIZE
        return matching[start:start + PAGE_SIZE], len(matching) > start + PAGE_SIZE
    runs = client.list_pipeline_runs(q.pipeline, q.status, PAGE_SIZE + 1, offset=(q.page - 1) * PAGE_SIZE, **filters)
    return [(r, shown_status(client, r)) for r in runs[:PAGE_SIZE]], len(runs) > PAGE_SIZE


def run_rows(client: "Client", q: RunsQuery) -> tuple[list[model.RunRow], bool]:
    """One page of the runs list, and whether there is a next page."""
    runs, more = list_runs(client, q)
    now = model.utcnow()
    return [model.run_row(r, status, now) for r, status in runs], more


def runs_context(client: "Client", q: RunsQuery) -> dict[str, Any]:
    rows, more = run_rows(client, q)
    stacks = client.list_stacks()
    operators = sorted({c.name for s in stacks for c in s.components if c.type == "step_operator"})
    return {"title": "Runs", "page": "runs", "q": q, "rows": rows, "more": more, "statuses": RUN_STATUSES,
            "pipelines": sorted(p.name for p in client.list_pipelines()), "stacks": sorted(s.name for s in stacks),
            "operators": operators}


# -- run page ------------------------------------------------------------------------------------------------
def run_context(client: "Client", run: "PipelineRun", *, report: bool = False) -> dict[str, Any]:
    status = shown_status(client, run)
    context: dict[str, Any] = {
        "title": run.name, "page": "run", "run": run, "status": status, "finished": model.run_finished(status),
        "dag": model.dag_layout(run), "timeline": model.timeline(run), "totals": model.totals(run),
        "resumable": status in ("failed", "stopped", "abandoned"), "report": report, "logs": {},
        "where": {name: model.where_of(s)[1] for name, s in run.steps.items()},
    }
    if report:  # the report carries every step's output: it is read without a server
        context["logs"] = {name: s.logs() for name, s in run.steps.items()}
    return context


def fragments(client: "Client", run: "PipelineRun") -> dict[str, str]:
    """The timeline and totals as HTML, for the run page's polling (computed here once, not in the browser)."""
    env = environment()
    ctx = {"run": run, "timeline": model.timeline(run), "totals": model.totals(run)}
    return {"timeline_html": env.get_template("_timeline.html").render(**ctx),
            "totals_html": env.get_template("_totals.html").render(**ctx)}


# -- step page -----------------------------------------------------------------------------------------------
def where_fields(step: "StepRunView") -> list[tuple[str, str, str]]:
    """(field, label, value) of the "where it ran" card: the latest attempt's record, else the step's config."""
    a = step.attempts[-1] if step.attempts else None
    requested = (a.requested if a and a.requested else None) or step.config.resource_settings_json
    used = []
    if a and a.peak_rss_bytes is not None:
        used.append(f"peak RSS {a.peak_rss_bytes / 1024 / 1024:.1f} MB")
    if a and a.cpu_seconds is not None:
        used.append(f"{a.cpu_seconds:.2f} CPU s")
    return [
        ("operator", "Step operator", (a.operator if a and a.operator else None) or step.config.step_operator
         or "in-process"),
        ("flavor", "Flavor", (a.operator_flavor if a and a.operator_flavor else None)
         or step.config.step_operator_flavor or "-"),
        ("backend_job_id", "Backend job id", (a.backend_job_id if a else None) or "-"),
        ("host", "Host", (a.host if a else None) or "-"),
        ("image_digest", "Image digest", (a.image_digest if a else None) or "-"),
        ("code_hash", "Code hash", (a.code_hash if a else None) or "-"),
        ("requested", "Requested", ", ".join(f"{k}={v}" for k, v in requested.items() if v is not None) or "-"),
        ("used", "Used", ", ".join(used) or "-"),
        ("peak_rss", "Peak RSS", f"{a.peak_rss_bytes / 1024 / 1024:.1f} MB"
         if a and a.peak_rss_bytes is not None else "-"),
        ("cpu_seconds", "CPU seconds", f"{a.cpu_seconds:.2f}" if a and a.cpu_seconds is not None else "-"),
        ("attempt", "Attempt", str(step.attempt or "-")),
        ("status", "Status", str(step.status)),
    ]


def attempts_of(step: "StepRunView") -> list[dict[str, Any]]:
    """Every attempt for the table (one built from the step itself when it has no attempt records)."""
    if step.attempts:
        return [{"number": a.number, "status": str(a.status), "outcome": model.outcome_of(str(a.status), a.failure_kind),
                 "failure_kind": a.failure_kind, "queued_for": a.queued_for, "ran_for": a.ran_for,
                 "publishing_for": a.publishing_for, "queue_reason": a.queue_reason, "backend_job_id": a.backend_job_id,
                 "host": a.host, "error": a.error, "traceback": a.traceback} for a in step.attempts]
    if step.status in ("pending", "cached", "skipped") and not step.attempt:
        return []
    return [{"number": step.attempt or 1, "status": str(step.status),
             "outcome": model.outcome_of(str(step.status), step.failure_kind), "failure_kind": step.failure_kind,
             "queued_for": None, "ran_for": step.duration, "publishing_for": None, "queue_reason": None,
             "backend_job_id": None, "host": None, "error": step.error, "traceback": step.traceback}]


def step_context(client: "Client", run: "PipelineRun", step: "StepRunView", attempt: int | None) -> dict[str, Any]:
    attempts = attempts_of(step)
    numbers = [a["number"] for a in attempts]
    shown = attempt if attempt in numbers else (numbers[-1] if numbers else None)
    status = shown_status(client, run)
    return {"title": f"{step.name} · {run.name}", "page": "step", "run": run, "step": step, "status": status,
            "where_fields": where_fields(step), "attempts": attempts, "attempt": shown,
            "live": str(step.status) in ("running", "pending") and not model.run_finished(status),
            "inputs": [(k, a, preview(a)) for k, a in step.inputs.items()],
            "outputs": [(k, a, preview(a)) for k, a in step.outputs.items()]}


# -- stacks and artifacts ------------------------------------------------------------------------------------
def stacks_context(stacks: "list[StackView]") -> dict[str, Any]:
    return {"title": "Stacks", "page": "stacks", "stacks": stacks}


def artifact_context(name: str, versions: "list[ArtifactView]") -> dict[str, Any]:
    latest = versions[-1]
    return {"title": f"Artifact {name}", "page": "artifact", "name": name, "versions": list(reversed(versions)),
            "latest": latest, "preview": preview(latest)}
