"""`conveyor run report RUN -o run.html`: the run page as one self-contained file (CI artifacts, sharing).

The CSS and JS are inlined, every step's log is embedded, and nothing refers to a server or the network: the file
opens from disk, offline, years later."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.client import Client

__all__ = ["render_report", "write_report"]


def render_report(client: "Client", run_ref: str) -> str:
    from conveyor.dashboard import pages

    run = client.get_pipeline_run(run_ref)
    return pages.render("run.html", inline=True, **pages.run_context(client, run, report=True))


def write_report(client: "Client", run_ref: str, path: Path) -> int:
    """Write the report of `run_ref` to `path`; its size in bytes."""
    html = render_report(client, run_ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return len(html.encode())
