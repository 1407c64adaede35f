"""Where one attempt of one step keeps its files: `<root>/runs/<run>/steps/<step>/attempt-<n>/...`.

One owner for building that path and reading it back, so the launcher, the remote side, the flavors that derive
the artifact store's root from it (container images) and those that mirror it elsewhere (Slurm's working_dir)
cannot drift apart. Pure string work: it lives beside the store (not in `execution`) so `images` may use it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Protocol

__all__ = ["AttemptLayout"]

_ATTEMPT = re.compile(r"^(?P<root>.+)/runs/(?P<run>[^/]+)/steps/(?P<step>[^/]+)/attempt-(?P<attempt>[0-9]+)$")


class _AttemptInfo(Protocol):
    """What a step operator's StepRunInfo tells about the attempt (no import of step_operators needed here)."""

    run_id: str
    pipeline_step_name: str
    attempt: int
    attempt_uri: str


@dataclass(frozen=True)
class AttemptLayout:
    """The folder of attempt `attempt` of step `step` in run `run_id`, under the artifact store's `root`."""

    root: str
    run_id: str
    step: str
    attempt: int

    @property
    def uri(self) -> str:
        sep = "" if self.root.endswith("/") else "/"
        return f"{self.root}{sep}runs/{self.run_id}/steps/{self.step}/attempt-{self.attempt}"

    @property
    def job(self) -> str:
        """The job spec the launcher writes for a step operator."""
        return self._file("job.json")

    @property
    def result(self) -> str:
        """What the remote side writes back (`conveyor.execution.jobspec.StepResult`)."""
        return self._file("result.json")

    @property
    def logs(self) -> str:
        return self._file("logs.txt")

    @property
    def envelope_key(self) -> str:
        """The 0600 key of sealed secret variables, for backends that show a job's environment to others."""
        return self._file("envelope.key")

    def output(self, name: str) -> str:
        return self._file(f"outputs/{name}")

    def _file(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def under(self, base: str) -> str:
        """This attempt's folder in another directory tree (a batch scheduler's shared `working_dir`):
        `<base>/<run>/<step>/attempt-<n>`."""
        return os.path.join(base, self.run_id, self.step, f"attempt-{self.attempt}")

    @classmethod
    def parse(cls, uri: str) -> "AttemptLayout | None":
        """The layout `uri` (an attempt folder) was built from; None when it is not one."""
        match = _ATTEMPT.match(uri.rstrip("/"))
        if match is None:
            return None
        return cls(match["root"], match["run"], match["step"], int(match["attempt"]))

    @classmethod
    def of(cls, info: _AttemptInfo) -> "AttemptLayout":
        """The layout of the attempt a step operator is told about; its root is read back from `info.attempt_uri`
        ("" when that URI is not in this layout: an info built by hand)."""
        parsed = cls.parse(info.attempt_uri)
        if parsed is not None and (parsed.run_id, parsed.step, parsed.attempt) == (
                info.run_id, info.pipeline_step_name, info.attempt):
            return parsed
        return cls("", info.run_id, info.pipeline_step_name, info.attempt)
