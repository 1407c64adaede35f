"""The Slurm commands the batch-scheduler base drives: sbatch, one squeue for all jobs, scontrol, sacct, scancel."""

from __future__ import annotations

from collections.abc import Sequence

from conveyor.exceptions import InfrastructureError
from conveyor.step_operators.batch.commands import AccountingUnavailable, SchedulerCommands
from conveyor.step_operators.batch.states import JobInfo, QueueEntry

__all__ = ["ACCOUNTING_FIELDS", "JobInfo", "Slurm", "parse_sacct"]

#: what `sacct` is asked about a finished job (`--format`); `parse_sacct` reads them back
ACCOUNTING_FIELDS = ("JobID", "State", "ExitCode", "Reason", "Timelimit", "NodeList")


def parse_sacct(text: str, job_id: str) -> JobInfo | None:
    """The job's own line of `sacct --parsable2 --noheader --format=<ACCOUNTING_FIELDS>` output (not its
    `.batch`/`.extern` steps), as scontrol would name it; None when sacct did not list the job."""
    row: dict[str, str] | None = None
    for line in text.splitlines():
        values = line.rstrip("\n").split("|")
        if len(values) >= len(ACCOUNTING_FIELDS) and values[0] == job_id:
            row = dict(zip(ACCOUNTING_FIELDS, values))  # the last one: a requeued job's latest run
    if row is None:
        return None
    code, _, sig = row["ExitCode"].partition(":")
    fields = {"JobId": job_id, "TimeLimit": row["Timelimit"], "NodeList": row["NodeList"]}
    return JobInfo(row["State"].split(" ", 1)[0],  # "CANCELLED by 1000"
                   row["Reason"], int(code) if code.isdigit() else None, int(sig) if sig.isdigit() else None, fields)


class Slurm(SchedulerCommands):
    """sbatch, squeue, scontrol, sacct and scancel (pyslurm does not support Slurm 22.05, so we shell out)."""

    scheduler = "Slurm"
    install_hint = "install the Slurm client commands or set the step operator's slurm_bin_dir"

    def submit_command(self, script: str, args: Sequence[str]) -> list[str]:
        return ["sbatch", "--parsable", *args, script]

    def submit(self, script: str, args: Sequence[str]) -> str:
        return super().submit(script, args).split(";", 1)[0]  # "<id>;<cluster>" on a federation

    def query(self, job_ids: Sequence[str]) -> dict[str, QueueEntry]:
        """One `squeue` for all the jobs: those it still lists (pending, running, completing...)."""
        if not job_ids:
            return {}
        proc = self.run("squeue", "--noheader", f"--jobs={','.join(job_ids)}", "--format=%i|%T|%r", check=False)
        if proc.returncode != 0:  # a single job id squeue no longer knows: "Invalid job id specified"
            return {}
        listed: dict[str, QueueEntry] = {}
        for line in proc.stdout.splitlines():
            job_id, _, rest = line.strip().partition("|")
            state, _, reason = rest.partition("|")
            if job_id in job_ids:
                listed[job_id] = QueueEntry(state, reason)
        return listed

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

    def accounting(self, job_id: str) -> JobInfo | None:
        """The job from `sacct`, once scontrol forgot it (MinJobAge after it ended)."""
        try:
            proc = self.run("sacct", "-j", job_id, "--allocations", "--parsable2", "--noheader",
                            f"--format={','.join(ACCOUNTING_FIELDS)}", check=False)
        except InfrastructureError as err:  # no sacct where the other commands are: no accounting to ask
            raise AccountingUnavailable(str(err)) from None
        if proc.returncode != 0:
            error = (proc.stderr or proc.stdout).strip()
            if "accounting storage is disabled" in error.lower():
                raise AccountingUnavailable(error)
            return None
        return parse_sacct(proc.stdout, job_id)

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
