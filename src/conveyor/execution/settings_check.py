"""Settings for a step operator flavor the step does not run on: reported once, never silently ignored.

`settings={"step_operator.sagemaker": ...}` on a step whose operator is `modal` does nothing there (each flavor
reads only its own key). That is legitimate in a pipeline whose steps run on different flavors, so it is a
warning, not an error; a key naming no flavor at all ("step_operator.sagmaker") gets a "did you mean".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["StepFlavor", "misplaced_operator_settings", "report_misplaced_operator_settings"]

PREFIX = "step_operator."
LOGGER = "conveyor.settings"
_reported: set[str] = set()


@dataclass(frozen=True)
class StepFlavor:
    """Where one step runs: its step operator and that operator's flavor (both None in-process)."""

    step: str
    operator: str | None
    flavor: str | None
    settings: Mapping[str, Any]


def _flavor_keys(settings: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in settings if k.startswith(PREFIX) and len(k) > len(PREFIX))


def _unknown(key: str, known: list[str], where: str) -> str:
    import difflib

    name = key[len(PREFIX):]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {PREFIX + close[0]!r}?" if close else ""
    return (f"{where}: settings key {key!r} names no step operator flavor, so nothing reads it.{hint} "
            f"Known flavors: {', '.join(known)} (`conveyor step-operator flavor list`).")


def misplaced_operator_settings(steps: Iterable[StepFlavor], pipeline_settings: Mapping[str, Any],
                                known_flavors: Callable[[], Iterable[str]]) -> list[str]:
    """One message per "step_operator.<flavor>" key that no step reads: for an unknown flavor, for another flavor
    than the step's operator's, or (pipeline-level) for a flavor no step of the pipeline runs on.

    `known_flavors` is asked only when some key names a flavor: listing them scans every installed package's entry
    points, which a run whose settings name no flavor (most) does not pay for."""
    steps = list(steps)
    messages: list[str] = []
    pipeline_keys = _flavor_keys(pipeline_settings)
    if not pipeline_keys and not any(_flavor_keys(s.settings) for s in steps):
        return messages
    known = sorted(known_flavors())
    used = {s.flavor for s in steps if s.flavor}
    for key in pipeline_keys:
        flavor = key[len(PREFIX):]
        if flavor not in known:
            messages.append(_unknown(key, known, "pipeline settings"))
        elif flavor not in used:
            on = ", ".join(sorted(used)) or "none: every step runs in-process"
            messages.append(f"pipeline settings[{key!r}] are ignored: no step of this pipeline runs on a {flavor!r} "
                            f"step operator (the flavors used: {on}).")
    for s in steps:
        for key in _flavor_keys(s.settings):
            if key in pipeline_keys and s.settings[key] == pipeline_settings.get(key):
                continue  # the pipeline's, reported above
            flavor = key[len(PREFIX):]
            where = f"step {s.step!r}"
            if flavor not in known:
                messages.append(_unknown(key, known, where))
            elif s.flavor is None:
                messages.append(f"{where}: settings[{key!r}] are ignored: the step runs in-process, on no step "
                                f"operator. Give it one with @step(step_operator=...) to use them.")
            elif flavor != s.flavor:
                messages.append(f"{where}: settings[{key!r}] are ignored: the step runs on step operator "
                                f"{s.operator!r}, of flavor {s.flavor!r}, which reads {PREFIX + s.flavor!r} (and "
                                f"\"step_operator\") only.")
    return messages


def report_misplaced_operator_settings(steps: Iterable[StepFlavor], pipeline_settings: Mapping[str, Any],
                                       known_flavors: Callable[[], Iterable[str]]) -> list[str]:
    """Log each message as a warning, once per process (a dry run then a run of the same pipeline say it once)."""
    messages = misplaced_operator_settings(steps, pipeline_settings, known_flavors)
    for message in messages:
        if message not in _reported:
            import logging

            _reported.add(message)
            logging.getLogger(LOGGER).warning("conveyor: %s", message)
    return messages
