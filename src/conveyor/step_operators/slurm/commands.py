"""Thin wrappers over the Slurm commands (pyslurm does not support Slurm 22.05, so we shell out)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from conveyor.exceptions import InfrastructureError


@dataclass(frozen=True)
class JobInfo:
    state: str
    reason: str
    exit_code: int | None
    signal: int | None
    fields: dict[str, str]


class Slurm:
    def __init__(self, bin_dir: str | None = None) -> None:
        self.bin_dir = bin_dir

    def _exe(self, name: str) -> str:
        path = os.path.join(self.bin_dir, name) if self.bin_dir else shutil.which(name)
        if not path or not os.path.exists(path):
            raise InfrastructureError(f"`{name}` not found{' in ' + self.bin_dir if self.bin_dir else ' on PATH'}: "
                                      "install the Slurm client commands or set the step operator's slurm_bin_dir")
        return path

    def run(self, name: str, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self._exe(name), *args], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise InfrastructureError(f"{name} {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc

    def submit(self, script: str, args: list[str]) -> str:
        out = self.run("sbatch", "--parsable", *args, script).stdout.strip()
        return out.split(";", 1)[0]

    def queue_state(self, job_id: str) -> tuple[str, str] | None:
        """(state, reason) while squeue still lists the job, else None."""
        proc = self.run("squeue", "-h", "-j", job_id, "-o", "%T|%r", check=False)
        line = proc.stdout.strip()
        if proc.returncode != 0 or not line:
            return None
        state, _, reason = line.partition("|")
        return state, reason

    def job(self, job_id: str) -> JobInfo | None:
        """What `scontrol show job` knows (finished jobs stay visible for MinJobAge seconds)."""
        proc = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            return None
        fields: dict[str, str] = {}
        for token in proc.stdout.strip().split():
            key, sep, value = token.partition("=")
            if sep and key not in fields:
                fields[key] = value
        code = sig = None
        if ":" in fields.get("ExitCode", ""):
            a, b = fields["ExitCode"].split(":", 1)
            code, sig = int(a), int(b)
        return JobInfo(fields.get("JobState", "UNKNOWN"), fields.get("Reason", ""), code, sig, fields)

    def cancel(self, job_id: str) -> None:
        self.run("scancel", job_id, check=False)

    def nodes(self) -> list[dict[str, str]]:
        out = self.run("sinfo", "-h", "-N", "-o", "%N|%c|%m|%G|%P").stdout
        rows = []
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 5:
                rows.append(dict(zip(("node", "cpus", "memory_mb", "gres", "partition"), parts)))
        return rows
