"""Per-thread capture of stdout/stderr, so in-process steps running side by side get their own logs."""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, TextIO

Sink = Callable[[str], None]


class _ThreadRouter:
    """Stands in for sys.stdout/sys.stderr; writes from a registered thread go to that thread's sink, the rest
    to `_others` (the original stream, or what `route_others` put there while a live display runs)."""

    def __init__(self, original: TextIO, sinks: dict[int, Sink]) -> None:
        self._original = original
        self._others: TextIO = original
        self._sinks = sinks

    def write(self, text: str) -> int:
        sink = self._sinks.get(threading.get_ident())
        if sink is None:
            return self._others.write(text)
        sink(text)
        return len(text)

    def flush(self) -> None:
        if threading.get_ident() not in self._sinks:  # a sink keeps nothing back; others' partial lines stay
            self._others.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


_sinks: dict[int, Sink] = {}
_lock = threading.Lock()
_installed = 0


def install() -> None:
    global _installed
    with _lock:
        if _installed == 0:
            sys.stdout = _ThreadRouter(sys.stdout, _sinks)  # type: ignore[assignment]
            sys.stderr = _ThreadRouter(sys.stderr, _sinks)  # type: ignore[assignment]
        _installed += 1


def uninstall() -> None:
    global _installed
    with _lock:
        _installed -= 1
        if _installed == 0:
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if isinstance(stream, _ThreadRouter):
                    setattr(sys, name, stream._original)


def route_others(wrap: Callable[[TextIO], TextIO]) -> Callable[[], None]:
    """While a live display owns the terminal: writes of threads that are no step's go through `wrap(stream)`
    (rich's FileProxy prints them above the display); steps' writes still reach their sinks, so they are stored
    and shown prefixed. Returns the undo. (rich.Live's own redirect would replace the router, and with it the
    capture: in-process steps' output was shown unprefixed and never stored when stdout was a terminal.)"""
    with _lock:
        routers = [s for s in (sys.stdout, sys.stderr) if isinstance(s, _ThreadRouter)]
        for router in routers:
            router._others = wrap(router._original)

    def undo() -> None:
        with _lock:
            for router in routers:
                others, router._others = router._others, router._original
                others.flush()

    return undo


def original_stdout() -> TextIO:
    out = sys.stdout
    return out._original if isinstance(out, _ThreadRouter) else out  # type: ignore[return-value]


class capture_thread:
    """Context manager: route this thread's prints to `sink` while the block runs."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def __enter__(self) -> None:
        _sinks[threading.get_ident()] = self._sink

    def __exit__(self, *_: Any) -> None:
        _sinks.pop(threading.get_ident(), None)
