"""The batch-scheduler base (`conveyor.step_operators.batch`): one queue call per poll interval for all of an
operator's jobs, finished jobs read from accounting once the controller forgot them, the state table, and a toy
second scheduler written against the base that runs real pipeline steps."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import pytest
from testkit import wait_until

from conveyor import pipeline, step
from conveyor.context import get_context
from conveyor.enums import FailureKind
from conveyor.exceptions import RunFailedError
from conveyor.step_operators.base import BaseStepOperatorFlavor
from conveyor.step_operators.batch import (
    BatchSchedulerStepOperator,
    BatchSchedulerStepOperatorConfig,
    Ending,
    JobInfo,
    JobPoller,
    QueueEntry,
    SchedulerCommands,
    StateTable,
)
from conveyor.step_operators.info import JobState, StepRunInfo, Submission
from conveyor.step_operators.polling import POLL_START, next_poll_delay
from conveyor.step_operators.slurm.commands import parse_sacct
from conveyor.step_operators.slurm.operator import SlurmStepOperator

if TYPE_CHECKING:
    from fixtures.slurm import SlurmCluster

POLL = 0.5  # the operators' poll_interval in these tests, in seconds


# -- the poller: concurrent callers share one query ---------------------------------------------------------------
def test_jobs_asked_about_together_share_one_query_and_the_answer_serves_an_interval() -> None:
    calls: list[list[str]] = []
    jobs = [str(n) for n in range(8)]
    poller: JobPoller

    def query(ids: Sequence[str]) -> dict[str, QueueEntry]:
        calls.append(list(ids))
        if len(calls) == 1:  # the first caller asks while the others arrive: they must not each ask again
            wait_until(lambda: poller.followed == set(jobs), timeout=30, what="every thread follows its job")
        return {job: QueueEntry("RUN") for job in ids}

    interval = [3600.0]
    poller = JobPoller(query, lambda: interval[0])
    start = threading.Barrier(len(jobs))
    seen: dict[str, QueueEntry | None] = {}

    def poll(job: str) -> None:
        start.wait()
        for _ in range(50):
            seen[job] = poller.state(job)

    threads = [threading.Thread(target=poll, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert seen == {job: QueueEntry("RUN") for job in jobs}
    assert len(calls) <= 2 and sorted(calls[-1]) == jobs, calls  # 400 polls of 8 new jobs: at most two queries
    interval[0] = 0.0  # the answer is now as old as the interval: the next poll asks again, for every job at once
    poller.state("3")
    assert len(calls) in (2, 3) and sorted(calls[-1]) == jobs


def test_a_job_that_left_the_queue_is_not_asked_about_again_until_forgotten() -> None:
    calls: list[list[str]] = []
    listed = {"1": QueueEntry("RUN"), "2": QueueEntry("PEND", "Priority")}
    poller = JobPoller(lambda ids: calls.append(list(ids)) or {j: listed[j] for j in ids if j in listed}, lambda: 0.0)
    assert poller.state("1") == QueueEntry("RUN") and poller.state("2") == QueueEntry("PEND", "Priority")
    del listed["1"]  # job 1 ends
    assert poller.state("2") == QueueEntry("PEND", "Priority") and poller.state("1") is None
    calls.clear()
    poller.state("1")
    poller.state("2")
    assert calls == [["2"], ["2"]]  # job 1 left the queue: only job 2 is asked about
    poller.forget("1")
    poller.state("1")
    assert calls[-1] == ["1", "2"]


def test_a_new_job_is_asked_about_on_the_launchers_back_off_then_once_per_interval() -> None:
    """A job that ends in its first second is noticed as soon as the launcher's own back-off would notice it (the
    shared answer is never the reason a short Slurm step waits an interval); later, one call per interval."""
    clock = [100.0]
    asked: list[float] = []
    poller = JobPoller(lambda ids: asked.append(clock[0] - 100.0) or {j: QueueEntry("RUN") for j in ids},
                       lambda: POLL, clock=lambda: clock[0])
    while clock[0] < 104.0:  # a caller every 10 ms (the log tailer asks every 50 ms)
        poller.state("1")
        clock[0] += 0.01
    polls, delay = [0.0], POLL_START  # the launcher's own schedule: 0, 50 ms, 125 ms, ... then every POLL
    while polls[-1] < 4.0:
        polls.append(polls[-1] + delay)
        delay = next_poll_delay(delay, POLL)
    # every poll of the launcher's finds an answer asked after its previous poll: as fresh as its own would be
    for before, at in zip(polls, polls[1:]):
        if at < 3.99:
            assert any(before - 1e-9 <= t <= at + 0.011 for t in asked), (before, at, asked)
    gaps = [b - a for a, b in zip(asked, asked[1:])]
    # the gaps only grow (to within the callers' 10 ms), up to the interval
    assert all(b >= a - 0.011 for a, b in zip(gaps, gaps[1:])) and max(gaps) <= POLL + 0.011, gaps
    assert sum(t < 1.0 for t in asked) >= 6, asked  # a fresh answer at the launcher's pace in the first second
    late = [t for t in asked if t >= 2.0]
    assert len(late) <= 2.0 / POLL + 1 and all(g >= POLL - 1e-9 for g in gaps[-len(late) + 1:]), asked


# -- the state table ----------------------------------------------------------------------------------------------
TOY_STATES = StateTable(
    scheduler="FBS", queued=frozenset({"PEND"}), running=frozenset({"RUN"}), completed=frozenset({"DONE"}),
    never_clear=frozenset({"NoSuchQueue"}), memory_states=frozenset({"OOM"}),
    endings={"KILLED": Ending(JobState.CANCELLED, "{scheduler} job {job_id} was killed on {Host}"),
             "LIMIT": Ending(JobState.FAILED, "{scheduler} job {job_id} hit {Limit}", FailureKind.TIMEOUT),
             "HOSTDOWN": Ending(JobState.LOST, "{scheduler} job {job_id}: {state}", with_exit_code=False)})


@pytest.mark.parametrize("info,memory,expected", [
    (JobInfo("PEND", "Priority", None, None), False, (JobState.QUEUED, "pending in the FBS queue (Priority)", None, None)),
    (JobInfo("PEND", "None", None, None), False, (JobState.QUEUED, "pending in the FBS queue", None, None)),
    (JobInfo("RUN", "", None, None), False, (JobState.RUNNING, "", None, None)),
    (JobInfo("DONE", "", 0, 0), False, (JobState.COMPLETED, "", 0, None)),
    (JobInfo("EXIT", "", 3, 0), False, (JobState.FAILED, "FBS job 7 ended EXIT (exit code 3)", 3, None)),
    (JobInfo("EXIT", "", 0, 9), False, (JobState.FAILED, "FBS job 7 ended EXIT (signal 9)", 0, None)),
    (JobInfo("EXIT", "", 0, 9), True, (JobState.FAILED, ("killed for memory: raise ResourceSettings(memory=...) "
                                       "(FBS job 7 ran out of its memory request)"), 0, FailureKind.MEMORY)),
    (JobInfo("KILLED", "", 0, 15, {"Host": "n3"}), False, (JobState.CANCELLED, "FBS job 7 was killed on n3", 0, None)),
    (JobInfo("LIMIT", "", 0, 15), False, (JobState.FAILED, "FBS job 7 hit ?", 0, FailureKind.TIMEOUT)),  # no field
    (JobInfo("HOSTDOWN", "", 1, 0), False, (JobState.LOST, "FBS job 7: HOSTDOWN", None, None)),
])
def test_the_state_table_turns_what_the_scheduler_says_into_a_report(info: JobInfo, memory: bool,
                                                                     expected: tuple) -> None:
    report = TOY_STATES.report("7", info, killed_for_memory=memory)
    assert (report.state, report.message, report.exit_code, report.kind) == expected


# -- accounting: a job the controller forgot ----------------------------------------------------------------------
#: `sacct -j ID --allocations --parsable2 --noheader --format=JobID,State,ExitCode,Reason,Timelimit,NodeList` as
#: Slurm prints it, with the job's steps too (what sacct prints without --allocations): the job's own line counts
SACCT = """\
101|COMPLETED|0:0|None|UNLIMITED|node1
101.batch|COMPLETED|0:0||UNLIMITED|node1
101.extern|COMPLETED|0:0||UNLIMITED|node1
102|TIMEOUT|0:15|TimeLimit|00:01:00|node2
102.batch|CANCELLED|0:15||00:01:00|node2
103|CANCELLED by 0|0:15|None|01:00:00|node1
104|OUT_OF_MEMORY|0:125|OutOfMemory|UNLIMITED|node1
104.batch|OUT_OF_MEMORY|0:125||UNLIMITED|node1
105|NODE_FAIL|1:0|None|UNLIMITED|node7
"""


def test_sacct_output_is_read_as_the_finished_job() -> None:
    assert parse_sacct(SACCT, "101") == JobInfo("COMPLETED", "None", 0, 0,
                                                {"JobId": "101", "TimeLimit": "UNLIMITED", "NodeList": "node1"})
    assert parse_sacct(SACCT, "103").state == "CANCELLED"  # "CANCELLED by <uid>"
    assert parse_sacct(SACCT, "10") is None and parse_sacct("", "101") is None
    timeout = SlurmStepOperator._finished("102", parse_sacct(SACCT, "102"))
    assert (timeout.state, timeout.kind) == (JobState.FAILED, FailureKind.TIMEOUT) and "00:01:00" in timeout.message
    assert SlurmStepOperator._finished("104", parse_sacct(SACCT, "104")).kind == FailureKind.MEMORY
    lost = SlurmStepOperator._finished("105", parse_sacct(SACCT, "105"))
    assert (lost.state, lost.message) == (JobState.LOST, "Slurm job 105: NODE_FAIL on node7")


def _fake_slurm_commands(bin_dir: Path, sacct: str) -> Path:
    """squeue and scontrol that no longer know any job (as after MinJobAge), and an `sacct` script; each logs
    its calls to calls.log."""
    bin_dir.mkdir()
    forgot = 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1'
    for name, body in {"squeue": forgot, "scontrol": forgot, "sacct": sacct}.items():
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> {bin_dir}/calls.log\n{body}\n')
        path.chmod(0o755)
    return bin_dir / "calls.log"


def _operator(name: str) -> SlurmStepOperator:
    return get_context().load_stack().step_operator(name)  # type: ignore[return-value]


def test_a_job_the_controller_forgot_is_read_from_the_accounting(step_operator, tmp_path: Path) -> None:
    (tmp_path / "sacct.out").write_text(SACCT)
    calls = _fake_slurm_commands(tmp_path / "bin", f"grep \"^$2|\" {tmp_path}/sacct.out; exit 0")
    step_operator("forgetful", "slurm", slurm_bin_dir=str(tmp_path / "bin"), poll_interval=POLL)
    operator = _operator("forgetful")

    def status(job_id: str):
        return operator.get_status(Submission("slurm", f"job-{job_id}", job_id, {"job_id": job_id}))

    assert (status("101").state, status("101").exit_code) == (JobState.COMPLETED, 0)
    assert status("102").kind == FailureKind.TIMEOUT and status("103").state == JobState.CANCELLED
    assert status("104").kind == FailureKind.MEMORY
    assert (status("106").state, status("106").message) == (JobState.LOST, "Slurm no longer knows job 106")
    assert "sacct -j 106 --allocations --parsable2 --noheader --format=JobID,State,ExitCode,Reason,Timelimit,NodeList" \
        in calls.read_text()


def test_without_accounting_a_forgotten_job_is_lost_and_sacct_is_asked_once(step_operator, tmp_path: Path) -> None:
    calls = _fake_slurm_commands(tmp_path / "bin", 'echo "Slurm accounting storage is disabled" >&2; exit 1')
    step_operator("no_accounting", "slurm", slurm_bin_dir=str(tmp_path / "bin"), poll_interval=POLL)
    operator = _operator("no_accounting")
    for job_id in ("201", "202"):
        report = operator.get_status(Submission("slurm", f"job-{job_id}", job_id, {"job_id": job_id}))
        assert (report.state, report.message) == (JobState.LOST, f"Slurm no longer knows job {job_id}")
    assert [line.split()[0] for line in calls.read_text().splitlines()].count("sacct") == 1


@pytest.mark.slurm
def test_on_the_test_cluster_without_accounting_a_forgotten_job_is_lost(slurm_cluster: SlurmCluster,
                                                                        step_operator) -> None:
    """The test cluster keeps no accounting (AccountingStorageType=accounting_storage/none): the real sacct says so,
    and a job Slurm does not know is lost, as before accounting was asked."""
    assert "accounting storage is disabled" in slurm_cluster.run("sacct", "-j", "1", check=False).stderr
    step_operator("hpc_noacct", "slurm", partition=slurm_cluster.partition, poll_interval=POLL)
    operator = _operator("hpc_noacct")
    report = operator.get_status(Submission("slurm", "gone", "999999", {"job_id": "999999"}))
    assert (report.state, report.message) == (JobState.LOST, "Slurm no longer knows job 999999")
    assert operator._accounting is False


# -- one squeue per interval on the real cluster ------------------------------------------------------------------
@step
def held(i: int, release: str) -> int:
    for _ in range(3000):  # runs until the test releases it: no fixed sleep for the test to race
        if os.path.exists(release):
            break
        time.sleep(0.1)
    return 10 * i


def _logged_slurm_commands(bin_dir: Path) -> Path:
    """The real Slurm commands behind wrappers that log each call (time, name, arguments) before running it."""
    from fixtures.slurm import find_binary

    bin_dir.mkdir()
    log = bin_dir / "calls.log"
    for name in ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "sacct"):
        real = find_binary(name)
        assert real, name
        (bin_dir / name).write_text(f'#!/bin/sh\necho "$(date +%s.%N) {name} $*" >> {log}\nexec {real} "$@"\n')
        (bin_dir / name).chmod(0o755)
    return log


def _squeue_calls(log: Path) -> list[tuple[float, list[str]]]:
    calls = []
    for line in log.read_text().splitlines() if log.exists() else []:
        stamp, name, *args = line.split()
        if name == "squeue":
            jobs = next((a.split("=", 1)[1] for a in args if a.startswith("--jobs=")), "")
            calls.append((float(stamp), jobs.split(",")))
    return calls


@pytest.mark.slurm
def test_one_squeue_per_poll_interval_follows_all_the_jobs(slurm_cluster: SlurmCluster, step_operator,
                                                           tmp_path: Path) -> None:
    log = _logged_slurm_commands(tmp_path / "bin")
    step_operator("hpc_counted", "slurm", partition=slurm_cluster.partition, poll_interval=POLL,
                  slurm_bin_dir=str(tmp_path / "bin"))
    release = str(tmp_path / "release")
    jobs = 4

    @pipeline(enable_cache=False)
    def four_at_once():
        for i in range(jobs):
            held.with_options(step_operator="hpc_counted")(i, release=release)

    result: dict = {}
    runner = threading.Thread(target=lambda: result.setdefault("run", four_at_once()), daemon=True)
    runner.start()
    try:
        # while the four jobs wait (two run, two pend on the two-CPU node), one squeue asks about all of them
        wait_until(lambda: any(len(ids) == jobs for _, ids in _squeue_calls(log)), timeout=120,
                   what="one squeue call about all four jobs")
    finally:
        Path(release).touch()
    runner.join(timeout=180)
    run = result["run"]
    assert sorted(s.outputs["output"].load() for s in run.steps.values()) == [0, 10, 20, 30]
    calls = _squeue_calls(log)
    span = calls[-1][0] - calls[0][0]
    # at most one call per interval, plus for each job one when it is first asked about (its submission) and the
    # launcher's back-off polls of its first second, plus the first
    bound = span / POLL + jobs * (1 + _back_off_polls(POLL)) + 2
    print(f"{len(calls)} squeue calls in {span:.1f} s (bound {bound:.0f})")
    assert len(calls) <= bound, (len(calls), span, calls)
    per_job = {job: sum(job in ids for _, ids in calls) for job in calls[-1][1] + calls[0][1]}
    assert all(count <= bound for count in per_job.values()), per_job


def _back_off_polls(interval: float) -> int:
    """How many polls the launcher makes before its gap reaches `interval`."""
    count, delay = 0, POLL_START
    while delay < interval:
        count, delay = count + 1, next_poll_delay(delay, interval)
    return count


# -- a second scheduler written against the base: a toy one on this machine ---------------------------------------
# BEGIN TOY SCHEDULER (its size is what a new scheduler costs: docs/step_operators/custom.md)
TOY_COMMANDS = {
    # fbs-submit SCRIPT: runs the job script detached, its output where the script's `#FBS output=` line says
    "fbs-submit": '''
        import os, re, subprocess, sys
        spool, script = os.path.join(os.path.dirname(__file__), "spool"), sys.argv[-1]
        os.makedirs(spool, exist_ok=True)
        output = re.search(r"^#FBS output=(.*)$", open(script).read(), re.M).group(1)
        n = 1
        while True:
            try:
                fd = os.open(os.path.join(spool, f"{n}.job"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                n += 1
        done = os.path.join(spool, f"{n}.exit")
        job = subprocess.Popen(["sh", "-c", 'bash "$1" >> "$2" 2>&1; echo $? > "$3.tmp"; mv -n "$3.tmp" "$3"', "sh",
                                script, output, done], start_new_session=True, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.write(fd, str(job.pid).encode())
        print(n)
    ''',
    # fbs-query ID...: one line `ID|RUN|` per job still running
    "fbs-query": '''
        import os, sys
        spool = os.path.join(os.path.dirname(__file__), "spool")
        for n in sys.argv[1:]:
            if os.path.exists(os.path.join(spool, f"{n}.job")) and not os.path.exists(os.path.join(spool, f"{n}.exit")):
                print(f"{n}|RUN|")
    ''',
    # fbs-info ID: `DONE 0`, `EXIT <code>` or `KILLED` for a finished job
    "fbs-info": '''
        import os, sys
        code = open(os.path.join(os.path.dirname(__file__), "spool", f"{sys.argv[1]}.exit")).read().strip()
        print("KILLED" if code == "killed" else f"DONE 0" if code == "0" else f"EXIT {code}")
    ''',
    # fbs-cancel ID
    "fbs-cancel": '''
        import os, signal, sys
        spool = os.path.join(os.path.dirname(__file__), "spool")
        with open(os.path.join(spool, f"{sys.argv[1]}.exit"), "x") as fh:
            fh.write("killed")
        os.killpg(int(open(os.path.join(spool, f"{sys.argv[1]}.job")).read()), signal.SIGTERM)
    ''',
}


class ToyCommands(SchedulerCommands):
    scheduler = "FBS"

    def submit_command(self, script: str, args: Sequence[str]) -> list[str]:
        return ["fbs-submit", *args, script]

    def query(self, job_ids: Sequence[str]) -> dict[str, QueueEntry]:
        lines = self.run("fbs-query", *job_ids).stdout.splitlines()
        return {job: QueueEntry(state, reason) for job, state, reason in (line.split("|") for line in lines)}

    def job(self, job_id: str) -> JobInfo | None:
        proc = self.run("fbs-info", job_id, check=False)
        if proc.returncode != 0:
            return None
        state, _, code = proc.stdout.strip().partition(" ")
        return JobInfo(state, "", int(code) if code else None, None)

    def cancel(self, job_id: str) -> None:
        self.run("fbs-cancel", job_id, check=False)


class ToyConfig(BatchSchedulerStepOperatorConfig):
    fbs_bin_dir: str


class ToyStepOperator(BatchSchedulerStepOperator):
    states: ClassVar[StateTable] = TOY_STATES

    def make_commands(self) -> ToyCommands:
        return ToyCommands(self.config.fbs_bin_dir)  # type: ignore[attr-defined]

    def script_header(self, info: StepRunInfo, output: str) -> list[str]:
        return [f"#FBS output={output}"]


class ToyFlavor(BaseStepOperatorFlavor):
    name = "fbs"

    @property
    def config_class(self) -> type[ToyConfig]:
        return ToyConfig

    @property
    def implementation_class(self) -> type[ToyStepOperator]:
        return ToyStepOperator
# END TOY SCHEDULER


@step
def shout(word: str) -> str:
    print(f"shouting {word}", flush=True)
    if word == "boom":
        raise ArithmeticError("the toy scheduler ran me and I failed")
    return word.upper()


def _toy_scheduler(tmp_path: Path, step_operator) -> Path:
    from conveyor.stack.component import ComponentType

    bin_dir = tmp_path / "fbs"
    bin_dir.mkdir()
    for name, body in TOY_COMMANDS.items():
        (bin_dir / name).write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
        (bin_dir / name).chmod(0o755)
    get_context().registry.register_custom(f"{__name__}.ToyFlavor", ComponentType.STEP_OPERATOR)
    step_operator("toy", "fbs", fbs_bin_dir=str(bin_dir), poll_interval=POLL)
    return bin_dir


def test_a_toy_scheduler_written_against_the_base_runs_pipeline_steps(step_operator, tmp_path: Path) -> None:
    bin_dir = _toy_scheduler(tmp_path, step_operator)

    @pipeline(enable_cache=False)
    def toy(words: list[str]):
        for word in words:
            shout.with_options(step_operator="toy")(word)

    run = toy(words=["hello", "batch"])
    assert sorted(s.outputs["output"].load() for s in run.steps.values()) == ["BATCH", "HELLO"]
    for step_run in run.steps.values():
        assert step_run.submission["flavor"] == "fbs" and step_run.submission["data"]["job_id"] in ("1", "2")
        assert f"shouting {step_run.outputs['output'].load().lower()}" in step_run.logs()  # the tailed output file
    assert sorted(p.name for p in (bin_dir / "spool").iterdir()) == ["1.exit", "1.job", "2.exit", "2.job"]

    with pytest.raises(RunFailedError) as failed:
        toy.with_options(run_name="toy-boom")(words=["boom"])
    boom = next(iter(failed.value.run.steps.values()))
    assert boom.status == "failed" and boom.failure_kind == "user"
    assert "ArithmeticError: the toy scheduler ran me and I failed" in boom.error


def test_the_toy_scheduler_reports_its_own_states_and_cancels(step_operator, tmp_path: Path) -> None:
    """Its table at work on real jobs: a job that exits 3 ends EXIT, a cancelled one KILLED."""
    bin_dir = _toy_scheduler(tmp_path, step_operator)
    operator: ToyStepOperator = get_context().load_stack().step_operator("toy")  # type: ignore[assignment]
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/bash\n#FBS output={tmp_path}/out.log\necho started\nexit 3\n")
    failed = Submission("fbs", "exit3", None, {"job_id": operator.commands.submit(str(script), []),
                                               "output": str(tmp_path / "out.log")})
    wait_until(lambda: operator.get_status(failed).terminal, timeout=60, what="the job ends")
    report = operator.get_status(failed)
    assert (report.state, report.exit_code) == (JobState.FAILED, 3) and "ended EXIT (exit code 3)" in report.message
    assert "".join(operator.logs(failed)) == "started\n"

    script.write_text(f"#!/bin/bash\n#FBS output={tmp_path}/out2.log\nsleep 300\n")
    sleeping = Submission("fbs", "sleeper", None, {"job_id": operator.commands.submit(str(script), [])})
    assert operator.get_status(sleeping).state == JobState.RUNNING
    operator.cancel(sleeping)
    assert operator.get_status(sleeping).state == JobState.CANCELLED
    assert (bin_dir / "spool" / "2.exit").read_text() == "killed"

