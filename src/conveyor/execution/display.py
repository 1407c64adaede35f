"""What a person sees while a run goes: each step's status, where it runs, its duration; logs prefixed."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from conveyor.execution.capture import original_stdout

STATUS_STYLE = {"pending": "dim", "queued": "yellow", "running": "cyan", "completed": "green", "cached": "green",
                "failed": "bold red", "stopped": "magenta", "skipped": "dim"}


class Display:
    def __init__(self, run_name: str, steps: list[str], where: dict[str, str]) -> None:
        self.run_name = run_name
        self.steps = steps
        self.where = where
        self.status = {s: "pending" for s in steps}
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.quiet = os.environ.get("CONVEYOR_QUIET", "") not in ("", "0")
        self._lock = threading.Lock()
        self._live: Any = None
        self._console: Any = None
        self._unroute: Any = None

    def _get_console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=original_stdout(), highlight=False, soft_wrap=True)
        return self._console

    def start(self) -> None:
        if self.quiet:
            return
        console = self._get_console()
        if console.is_terminal:
            from rich.file_proxy import FileProxy
            from rich.live import Live

            from conveyor.execution import capture

            # not Live's own stdout/stderr redirect: it would replace the per-step capture (see route_others)
            # the table is drawn by Live's own timer (8 times a second), never on a state change: a fan-out of
            # thousands of steps would otherwise redraw the whole table thousands of times
            self._live = Live(console=console, get_renderable=self._table, refresh_per_second=8, transient=True,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
            self._unroute = capture.route_others(lambda stream: FileProxy(console, stream))
        else:
            console.print(f"Running pipeline run {self.run_name} ({len(self.steps)} steps)")

    def duration(self, step: str) -> float | None:
        if step not in self.started:
            return None
        return self.ended.get(step, time.monotonic()) - self.started[step]

    def update(self, step: str, status: str, detail: str = "") -> None:
        with self._lock:
            if status == "running" and step not in self.started:
                self.started[step] = time.monotonic()
            if status in ("completed", "cached", "failed", "stopped", "skipped"):
                self.started.setdefault(step, time.monotonic())
                self.ended[step] = time.monotonic()
            self.status[step] = status
        if self.quiet:
            return
        if self._live is not None:
            return
        if status != "pending":
            d = self.duration(step)
            took = f" in {d:.2f}s" if status in ("completed", "failed", "stopped") and d is not None else ""
            extra = f": {detail}" if detail else ""
            self._get_console().print(f"  step [bold]{step}[/] {status} on {self.where.get(step, '?')}{took}{extra}",
                                      style=STATUS_STYLE.get(status))

    def log(self, step: str, line: str) -> None:
        if self.quiet:
            return
        console = self._get_console()
        from rich.text import Text

        text = Text(f"[{step}] ", style="dim")
        text.append(line.rstrip("\n"))
        console.print(text)

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title=f"run {self.run_name}", expand=False)
        for col in ("step", "status", "where", "duration"):
            table.add_column(col)
        for s in self.steps:
            d = self.duration(s)
            table.add_row(s, f"[{STATUS_STYLE.get(self.status[s], '')}]{self.status[s]}[/]", self.where.get(s, "?"),
                          "" if d is None else f"{d:.2f}s")
        return table

    def stop(self, run_status: str) -> None:
        if self.quiet:
            return
        if self._unroute is not None:
            self._unroute()
            self._unroute = None
        if self._live is not None:
            self._live.stop()
            self._live = None
        console = self._get_console()
        console.print(self._table())
        style = "green" if run_status == "completed" else "bold red"
        console.print(f"Run {self.run_name} {run_status}.", style=style)
