"""What a person sees while a run goes: each step's status, where it runs, how long, and why it waits or retries.

In a terminal a live table is redrawn on a timer (elapsed times are computed at each redraw, so they tick); a run
wider than the screen collapses into counts per status, still listing the failed, running and queued steps that
fit. Anywhere else (CI logs, pipes) it is one line per state change, never a redraw. Either way the run ends with
the commands to type next. A step's logs are shown prefixed with its name; the traceback a failing remote step
prints is held back and dropped, as the run's error prints it once (user frames first).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any

from conveyor.execution.capture import original_stdout

__all__ = ["STATUS_STYLE", "Display", "count_line"]

STATUS_STYLE = {"pending": "dim", "queued": "yellow", "running": "cyan", "completed": "green", "cached": "green",
                "failed": "bold red", "stopped": "magenta", "skipped": "dim"}
#: the order of the counts line, and which rows a collapsed table keeps (most telling first)
COUNT_ORDER = ("completed", "cached", "running", "queued", "pending", "failed", "stopped", "skipped")
KEPT_FIRST = ("failed", "running", "queued", "stopped")
ENDED = frozenset({"completed", "cached", "failed", "stopped", "skipped"})
#: lines of a table besides its rows (title, header, rules, caption) and a margin for the logs printed above it
TABLE_CHROME = 7
#: the height a summary gets where there is no terminal to measure (CI logs)
PLAIN_HEIGHT = 40
TRACEBACK_HEADER = "Traceback (most recent call last):"
_CHAIN = ("During handling of the above exception, another exception occurred:",
          "The above exception was the direct cause of the following exception:")
#: a held traceback longer than this is not a step's failure being reported: shown as it is
HELD_LIMIT = 2000


def count_line(counts: "Counter[str]") -> str:
    """`812 completed · 16 running · 172 pending`: the statuses in a fixed order, zeros left out."""
    order = [s for s in COUNT_ORDER if counts.get(s)] + sorted(s for s in counts if s not in COUNT_ORDER and counts[s])
    return " · ".join(f"{counts[s]} {s}" for s in order)


class _Held:
    """A traceback a step printed, held until we know whether it is the one the step failed with."""

    __slots__ = ("ended", "lines")

    def __init__(self, first: str) -> None:
        self.lines = [first]
        self.ended = False  # the exception's line came (the first unindented line after the frames)

    def takes(self, line: str) -> bool:
        """Whether `line` still belongs to the traceback."""
        if line.startswith((" ", "\t")) or line == "" or line == TRACEBACK_HEADER or line in _CHAIN:
            if line == TRACEBACK_HEADER or line in _CHAIN:
                self.ended = False
            return True
        if self.ended:
            return False
        self.ended = True
        return True


class Display:
    def __init__(self, run_name: str, steps: list[str], where: dict[str, str]) -> None:
        self.run_name = run_name
        self.steps = steps
        self.where = where
        self.status = {s: "pending" for s in steps}
        self.counts: Counter[str] = Counter({"pending": len(steps)} if steps else {})
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.detail: dict[str, str] = {}  # what the step waits for or went through (queue reason, retry, ...)
        self.attempt: dict[str, str] = {}  # "attempt 2/3"
        self.phase_since: dict[str, float] = {}  # when the step entered its current status (queued for ...)
        self.quiet = os.environ.get("CONVEYOR_QUIET", "") not in ("", "0")
        self._held: dict[str, _Held] = {}
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
        """Seconds since the step started (to its end once it ended): computed when asked, so it ticks."""
        if step not in self.started:
            return None
        return self.ended.get(step, time.monotonic()) - self.started[step]

    def update(self, step: str, status: str, detail: str = "", *, attempt: int | None = None,
               attempts: int | None = None, traceback: str | None = None) -> None:
        """A step's new status. `detail` says why (queue reason, retry, re-attach); `attempt` of `attempts` is the
        attempt starting; `traceback` is the one a failed attempt ended with (the echoed copy is dropped)."""
        t = time.monotonic()
        with self._lock:
            old = self.status.get(step)
            if status in ("running", "queued") and step not in self.started:
                self.started[step] = t
            if status in ENDED:
                self.started.setdefault(step, t)
                self.ended[step] = t
            if status != old:
                self.phase_since[step] = t
                self.counts[old or "pending"] -= 1
                self.counts[status] += 1
            self.status[step] = status
            if attempt is not None:
                total = max(attempts or 1, attempt)
                self.attempt[step] = f"attempt {attempt}/{total}" if total > 1 else ""
            self.detail[step] = detail
            held = self._held.pop(step, None)
        if held is not None and not (traceback and _same_traceback(held.lines, traceback)):
            self._print_logs(step, held.lines)  # not the failure's traceback: the step's own output
        if self.quiet or self._live is not None or status == "pending":
            return
        d = self.duration(step)
        took = f" in {d:.2f}s" if status in ("completed", "failed", "stopped") and d is not None else ""
        said = ", ".join(x for x in (self.attempt.get(step) if attempt is not None else "", detail) if x)
        extra = f": {said}" if said else ""
        from rich.markup import escape

        self._get_console().print(f"  step [bold]{escape(step)}[/] {status} on {escape(self.where.get(step, '?'))}"
                                  f"{took}{escape(extra)}", style=STATUS_STYLE.get(status))

    def log(self, step: str, line: str) -> None:
        if self.quiet:
            return
        line = line.rstrip("\n")
        with self._lock:
            held = self._held.get(step)
            if held is None:
                if line != TRACEBACK_HEADER:
                    flush: list[str] = [line]
                else:
                    self._held[step] = _Held(line)
                    flush = []
            elif held.takes(line) and len(held.lines) < HELD_LIMIT:
                held.lines.append(line)
                flush = []
            else:  # the traceback ended and the step goes on: it was the step's own output
                del self._held[step]
                flush = [*held.lines, line]
        self._print_logs(step, flush)

    def _print_logs(self, step: str, lines: list[str]) -> None:
        if not lines or self.quiet:
            return
        from rich.text import Text

        console = self._get_console()
        for line in lines:
            text = Text(f"[{step}] ", style="dim")
            text.append(line)
            console.print(text)

    # -- the table --------------------------------------------------------------------------------
    def _detail(self, step: str, now: float) -> str:
        status = self.status[step]
        said = self.detail.get(step, "")
        if status == "queued":
            waited = now - self.phase_since.get(step, now)
            said = f"queued {waited:.0f}s" + (f": {said}" if said else "")
        if status in ENDED and status != "failed":
            said = said if status == "stopped" else ""
        parts = [p for p in (self.attempt.get(step, ""), said) if p]
        return " · ".join(parts)

    def _rows(self, height: int) -> tuple[list[str], str | None]:
        """The steps to list, and the counts line when they do not all fit in `height` lines."""
        fit = max(3, height - TABLE_CHROME)
        if len(self.steps) <= fit:
            return self.steps, None
        rank = {s: i for i, s in enumerate(KEPT_FIRST)}
        kept = sorted((s for s in self.steps if self.status[s] in rank), key=lambda s: rank[self.status[s]])
        listed = set(kept[:fit])
        shown = [s for s in self.steps if s in listed]  # in the pipeline's order
        return shown, f"{count_line(self.counts)}  ({len(shown)} of {len(self.steps)} steps listed)"

    def _table(self, height: int | None = None) -> Any:
        from rich.markup import escape
        from rich.table import Table

        now = time.monotonic()
        with self._lock:
            rows, counts = self._rows(height if height is not None else self._get_console().height)
            table = Table(title=f"run {escape(self.run_name)}", expand=False, caption=counts, caption_justify="left")
            for col in ("step", "status", "where", "duration", "detail"):
                table.add_column(col)
            for s in rows:
                d = self.duration(s)
                table.add_row(escape(s), f"[{STATUS_STYLE.get(self.status[s], '')}]{self.status[s]}[/]",
                              escape(self.where.get(s, "?")), "" if d is None else f"{d:.2f}s",
                              escape(self._detail(s, now)))
        return table

    def stop(self, run_status: str) -> None:
        if self.quiet:
            return
        with self._lock:
            held, self._held = self._held, {}
        for step, h in held.items():
            self._print_logs(step, h.lines)
        if self._unroute is not None:
            self._unroute()
            self._unroute = None
        console = self._get_console()
        height = PLAIN_HEIGHT  # without a terminal the lines said it all: a table only when it is short
        if self._live is not None:
            self._live.stop()
            self._live = None
            height = console.height
        rows, counts = self._rows(height)
        # a wide run whose every step ended well has no row worth listing: its counts say it
        console.print(self._table(height) if counts is None or rows else f"  {count_line(self.counts)}")
        style = "green" if run_status == "completed" else "bold red"
        console.print(f"Run {self.run_name} {run_status}.", style=style, markup=False)
        self._next_commands(run_status)

    def _next_commands(self, run_status: str) -> None:
        """What to type next: the run's details, the failed step's output, the dashboard."""
        failed = [s for s in self.steps if self.status[s] == "failed"]
        hints = [(f"conveyor run describe {self.run_name}", "each step's attempts, where and how long they ran")]
        if failed:
            others = f" ({len(failed) - 1} more failed: see describe)" if len(failed) > 1 else ""
            hints.append((f"conveyor run logs {self.run_name} {failed[0]}", f"what the failed step printed{others}"))
        if run_status != "completed":
            hints.append((f"conveyor run resume {self.run_name}", "run what did not complete, keeping what did"))
        hints.append(("conveyor dashboard", "this run and the others in a browser"))
        from rich.text import Text

        console = self._get_console()
        console.print("Next:", style="bold")
        width = max(len(cmd) for cmd, _ in hints)
        for cmd, why in hints:
            text = Text(f"  {cmd.ljust(width)}  ")
            text.append(why, style="dim")
            console.print(text)


def _same_traceback(held: list[str], traceback: str) -> bool:
    """Whether the lines a step printed are the traceback it failed with (its last line, the exception's, matches;
    the remote side prints exactly what it reports)."""
    ours = [line.rstrip() for line in traceback.rstrip().splitlines()]
    theirs = [line.rstrip() for line in held]
    while theirs and not theirs[-1]:
        theirs.pop()
    return bool(ours) and bool(theirs) and theirs[0] == ours[0] and theirs[-1] == ours[-1]
