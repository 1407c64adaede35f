"""A step's traceback as a person wants to read it: their own frames, not the machinery that called them.

A step's traceback starts in conveyor's own code (the launcher or the remote entrypoint, then the runner that
calls the step function); those frames say nothing about what went wrong. They are collapsed into one line, so
that the first frame shown is the user's. Frames of conveyor's code that the step itself called (a
`load_artifact` that failed) stay where they are: they are where the error happened. The stored traceback keeps
every frame (`conveyor run describe` shows it whole). Text in, text out: a remote step's traceback arrives as text.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

__all__ = ["is_conveyor_frame", "user_frames_first"]

HEADER = "Traceback (most recent call last):"
_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line \d+')


@lru_cache(maxsize=1)
def _package_entries() -> frozenset[str]:
    """The names directly inside the installed conveyor package: a remote path `.../conveyor/<name>` with one of
    them is conveyor's (the remote side runs the same version, perhaps installed elsewhere)."""
    root = Path(__file__).resolve().parent.parent
    return frozenset(p.name for p in root.iterdir() if p.suffix == ".py" or (p.is_dir() and any(p.glob("*.py"))))


def is_conveyor_frame(path: str) -> bool:
    """Whether a frame's file is conveyor's own code, here or where a remote step ran."""
    parts = re.split(r"[/\\]", path)
    for i in range(len(parts) - 1):
        if parts[i] == "conveyor" and parts[i + 1] in _package_entries():
            return True
    return False


def _frames(lines: list[str]) -> list[list[str]]:
    """The lines of one traceback section after its header, cut into frames (a `File` line and its code lines)."""
    frames: list[list[str]] = []
    for line in lines:
        if _FRAME.match(line) or not frames:
            frames.append([line])
        else:
            frames[-1].append(line)
    return frames


def _collapse_section(lines: list[str]) -> tuple[list[str], int]:
    """One `Traceback (most recent call last):` section: its leading conveyor frames dropped (when a user frame
    follows them); returns the lines kept and how many frames were dropped."""
    body_end = len(lines)
    for i, line in enumerate(lines):  # the frames end at the first line not indented: the exception's line
        if line and not line[0].isspace():
            body_end = i
            break
    frames = _frames(lines[:body_end])
    leading = 0
    for frame in frames:
        match = _FRAME.match(frame[0])
        if match is None or not is_conveyor_frame(match.group("path")):
            break
        leading += 1
    if leading == 0 or leading == len(frames):  # all conveyor's: the error is ours, every frame matters
        return lines, 0
    kept = [line for frame in frames[leading:] for line in frame]
    return kept + lines[body_end:], leading


def user_frames_first(text: str) -> str:
    """`text` (one or more chained tracebacks) with the conveyor frames that called the step collapsed into a
    line at the end naming how many were hidden. Text that is not a traceback comes back unchanged."""
    lines = text.rstrip("\n").splitlines()
    starts = [i for i, line in enumerate(lines) if line == HEADER]
    if not starts:
        return text
    out: list[str] = lines[: starts[0]]
    hidden = 0
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        kept, dropped = _collapse_section(lines[start + 1:end])
        out += [HEADER, *kept]
        hidden += dropped
    if hidden:
        frames = "frame" if hidden == 1 else "frames"
        out.append(f"({hidden} {frames} of conveyor's own code, which called the step, not shown: "
                   "`conveyor run describe RUN` prints the whole traceback)")
    return "\n".join(out)
