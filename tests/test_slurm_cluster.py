"""The suite's own Slurm cluster (tests/fixtures/slurm.py) behaves like a real one.

These tests exercise the cluster, not Conveyor: they pin down what Slurm 22.05
reports in each case, which the Slurm step operator must map. Observed here
(Debian 12, slurm-wlm 22.05.8, the fixture's config; ``scontrol show job -d -o``
fields, ExitCode/DerivedExitCode are ``<exit status>:<signal>``):

* ``exit 0``: JobState=COMPLETED Reason=None ExitCode=0:0 DerivedExitCode=0:0.
* ``exit 3``: JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 DerivedExitCode=0:0.
* ``--mem=50M`` exceeded (300 MB touched): killed within ~1-2 s by jobacct_gather's
  OverMemoryKill with SIGKILL: JobState=FAILED Reason=JobLaunchFailure (sic)
  ExitCode=0:9 DerivedExitCode=0:0 -- NOT ``OUT_OF_MEMORY``, which Slurm only
  reports when task/cgroup sees an OOM (real clusters). The only distinguishing
  mark is in the job's stderr file (StdErr=, here the same file as StdOut=)::

      slurmstepd-<node>: error: StepId=<id>.batch exceeded memory limit (331378688 > 52428800), being killed
      slurmstepd-<node>: error: Exceeded job memory limit
      slurmstepd-<node>: error: *** JOB <id> ON <node> CANCELLED AT 2026-11-23T06:42:38 ***

* ``--time=1`` + ``sleep 600``: JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15
  DerivedExitCode=0:0, RunTime 00:01:28 here: slurmctld checks limits only every
  30 s, so it ends 60-92 s after start (stderr: ``*** JOB <id> ON <node>
  CANCELLED AT ... DUE TO TIME LIMIT ***``).
* ``scancel`` of a running job: JobState=CANCELLED Reason=None ExitCode=0:15
  (within ~0.1 s; the job's processes are gone). Of a pending job: CANCELLED,
  ExitCode=0:0, and Reason keeps the pending reason (e.g. PartitionTimeLimit).
* ``-p tiny --time=10`` (tiny: MaxTime=1): accepted by sbatch (exit 0), then
  JobState=PENDING Reason=PartitionTimeLimit forever; squeue shows
  ``PD ... (PartitionTimeLimit)``.

Finished jobs stay listed by ``scontrol show job`` for MinJobAge (600 s here), but
plain ``squeue`` drops them at once (``squeue -t all`` still shows them, e.g.
``3|FAILED|NonZeroExitCode``). Once purged, ``scontrol show job <id>`` and
``squeue -j <id>`` exit 1 with ``slurm_load_jobs error: Invalid job id specified``.
``sacct`` is unavailable (``Slurm accounting storage is disabled``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fixtures.slurm
from fixtures.slurm import SlurmCluster, parse_scontrol, reap_stale_clusters, start_slurm_cluster


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session cluster, left with no job queued or running after each test."""
    yield slurm_cluster
    slurm_cluster.cancel_all()
    slurm_cluster.wait_idle(timeout=30)


def sbatch(script: Path, *args: str) -> str:
    """Plain ``sbatch --parsable``, as the step operator will call it (os.environ has SLURM_CONF)."""
    out = subprocess.run(["sbatch", "--parsable", *args, str(script)], capture_output=True, text=True, check=True)
    return out.stdout.strip().split(";")[0]


def write_script(slurm: SlurmCluster, name: str, body: str) -> Path:
    path = slurm.work_dir / f"{name}-{time.monotonic_ns()}.sh"
    path.write_text("#!/bin/bash\n" + body)
    return path


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "<gone>"


def pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_environ_points_at_cluster(slurm: SlurmCluster) -> None:
    assert os.environ["SLURM_CONF"] == str(slurm.conf) == slurm.env["SLURM_CONF"]
    out = subprocess.run(["sinfo", "--noheader", "--format=%P %a %l %T %N"], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == [
        f"{slurm.partition}* up infinite idle {slurm.nodename}",
        f"{slurm.tiny_partition} up 1:00 idle {slurm.nodename}",
    ]
    node = parse_scontrol(slurm.run("scontrol", "show", "node", "-o", slurm.nodename).stdout)
    assert node["CPUTot"] == str(slurm.cpus)
    assert node["RealMemory"] == str(slurm.memory_mb)
    assert node["Gres"] == f"gpu:{slurm.gpus}"


def test_job_completes(slurm: SlurmCluster) -> None:
    script = write_script(slurm, "hello", "echo hello from $SLURM_JOB_ID on $(hostname -s)\n")
    out = slurm.work_dir / "hello.out"
    job_id = sbatch(script, f"--output={out}")
    assert job_id.isdigit()
    info = slurm.wait_job(job_id, timeout=30)
    assert (info["JobState"], info["Reason"], info["ExitCode"], info["DerivedExitCode"]) == (
        "COMPLETED", "None", "0:0", "0:0",
    )  # fmt: skip
    assert out.read_text() == f"hello from {job_id} on {slurm.nodename}\n"
    # Gone from plain squeue at once, still known to scontrol and `squeue -t all` (MinJobAge).
    assert job_id not in slurm.jobs()
    listed = slurm.run("squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%i|%T|%r").stdout
    assert listed.strip() == f"{job_id}|COMPLETED|None"


def test_nonzero_exit(slurm: SlurmCluster) -> None:
    job_id = slurm.submit("exit 3\n", name="exit3")
    info = slurm.wait_job(job_id, timeout=30)
    assert (info["JobState"], info["Reason"], info["ExitCode"], info["DerivedExitCode"]) == (
        "FAILED", "NonZeroExitCode", "3:0", "0:0",
    )  # fmt: skip


def test_gpu_job_sees_cuda_visible_devices(slurm: SlurmCluster) -> None:
    job_id = slurm.submit('echo "CVD=$CUDA_VISIBLE_DEVICES"\n', "--gres=gpu:1", name="gpu1")
    info = slurm.wait_job(job_id, timeout=30)
    assert info["JobState"] == "COMPLETED"
    assert Path(info["StdOut"]).read_text().strip() in {f"CVD={i}" for i in range(slurm.gpus)}

    job_id = slurm.submit('echo "CVD=$CUDA_VISIBLE_DEVICES"\n', f"--gres=gpu:{slurm.gpus}", name="gpus")
    info = slurm.wait_job(job_id, timeout=30)
    assert Path(info["StdOut"]).read_text().strip() == "CVD=" + ",".join(str(i) for i in range(slurm.gpus))


def test_two_one_cpu_jobs_run_at_once(slurm: SlurmCluster) -> None:
    """cons_tres + DefMemPerCPU: a default job takes one core and a share of memory, not the node."""
    body = "touch {flag}.started\nfor i in $(seq 300); do [ -e {flag}.go ] && exit 0; sleep 0.1; done\nexit 1\n"
    flag = slurm.work_dir / f"pair-{time.monotonic_ns()}"
    ids = [slurm.submit(body.format(flag=f"{flag}-{n}"), "--cpus-per-task=1", name=f"pair{n}") for n in range(2)]
    deadline = time.monotonic() + 30
    while not all(Path(f"{flag}-{n}.started").exists() for n in range(2)):
        assert time.monotonic() < deadline, f"not both running: {[slurm.job(i)['JobState'] for i in ids]}"
        time.sleep(0.1)
    states = {slurm.job(i)["JobState"] for i in ids}
    assert states == {"RUNNING"}
    for n in range(2):
        Path(f"{flag}-{n}.go").touch()
    assert [slurm.wait_job(i, timeout=30)["JobState"] for i in ids] == ["COMPLETED", "COMPLETED"]


def test_memory_limit_kills_job(slurm: SlurmCluster) -> None:
    """OverMemoryKill: FAILED/JobLaunchFailure/0:9, not OUT_OF_MEMORY (that needs task/cgroup)."""
    body = (
        "python3 -c 'import time; b = b\"x\" * (300 << 20); time.sleep(600)'\n"
        "echo survived $?\n"
    )  # fmt: skip
    job_id = slurm.submit(body, "--mem=50M", name="oom")
    info = slurm.wait_job(job_id, timeout=120)  # only a kill ends it before 600 s
    assert (info["JobState"], info["Reason"], info["ExitCode"], info["DerivedExitCode"]) == (
        "FAILED", "JobLaunchFailure", "0:9", "0:0",
    )  # fmt: skip
    assert info["MinMemoryNode"] == "50M"
    err = Path(info["StdErr"]).read_text()
    assert f"StepId={job_id}.batch exceeded memory limit" in err
    assert "Exceeded job memory limit" in err
    assert "survived" not in err  # the whole batch step is killed, not just python


def test_never_clearing_pending_reason(slurm: SlurmCluster) -> None:
    job_id = slurm.submit("true\n", f"--partition={slurm.tiny_partition}", "--time=10", name="toolong")
    deadline = time.monotonic() + 10
    while (info := slurm.job(job_id))["Reason"] != slurm.never_clear_reason:
        assert time.monotonic() < deadline, info
        time.sleep(0.1)
    assert slurm.never_clear_reason == "PartitionTimeLimit"
    time.sleep(2)  # several scheduler passes (bf_interval=1): still pending, same reason
    info = slurm.job(job_id)
    assert (info["JobState"], info["Reason"], info["ExitCode"]) == ("PENDING", "PartitionTimeLimit", "0:0")
    listed = slurm.run("squeue", "--noheader", f"--jobs={job_id}", "--format=%i|%t|%r").stdout
    assert listed.strip() == f"{job_id}|PD|PartitionTimeLimit"
    slurm.run("scancel", job_id)
    info = slurm.wait_job(job_id, timeout=10)
    assert (info["JobState"], info["Reason"], info["ExitCode"], info["DerivedExitCode"]) == (
        "CANCELLED", "PartitionTimeLimit", "0:0", "0:0",
    )  # fmt: skip


def test_scancel_kills_running_job(slurm: SlurmCluster) -> None:
    pid_file = slurm.work_dir / f"sleeper-{time.monotonic_ns()}.pid"
    job_id = slurm.submit(f"sleep 600 &\necho $! > {pid_file}\nwait\n", name="sleeper")
    slurm.wait_job(job_id, {"RUNNING"}, timeout=30)
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    assert pid_alive(pid)
    assert job_id in slurm.jobs()
    subprocess.run(["scancel", job_id], check=True)
    info = slurm.wait_job(job_id, timeout=30)
    assert (info["JobState"], info["Reason"], info["DerivedExitCode"]) == ("CANCELLED", "None", "0:0")
    # The signal in ExitCode is a race inside slurmstepd: 0:15 when the batch shell saw SIGTERM, 0:0 when it was
    # already gone (both seen here, the latter in CI); what matters is below: the job's processes are gone.
    assert info["ExitCode"] in ("0:15", "0:0"), info["ExitCode"]
    slurm.wait_idle(timeout=30)
    deadline = time.monotonic() + 5
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"sleep {pid} survived scancel"
        time.sleep(0.05)
    assert slurm.jobs() == []


def test_second_cluster_does_not_clash(slurm: SlurmCluster) -> None:
    """A second private cluster runs beside the first, and stop() leaves nothing behind."""
    other = start_slurm_cluster(set_environ=False)
    try:
        assert other.conf != slurm.conf
        assert {other.ctld_port, other.slurmd_port}.isdisjoint({slurm.ctld_port, slurm.slurmd_port})
        job_id = other.submit("sleep 600\n", name="other")
        other.wait_job(job_id, {"RUNNING"}, timeout=30)
        assert other.jobs() == [job_id]
        assert slurm.jobs() == []
        assert os.environ["SLURM_CONF"] == str(slurm.conf)
    finally:
        pids = other._leftover_pids()
        other.stop()
    assert pids and not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not other.run_dir.exists()
    assert os.environ["SLURM_CONF"] == str(slurm.conf)
    job_id = slurm.submit("true\n", name="after")
    assert slurm.wait_job(job_id, timeout=30)["JobState"] == "COMPLETED"


ORPHAN = """
import os, sys
sys.path.insert(0, {tests!r})
from fixtures.slurm import start_slurm_cluster
cluster = start_slurm_cluster(set_environ=False)
job_id = cluster.submit("sleep 600\\n", name="orphan")
cluster.wait_job(job_id, {{"RUNNING"}}, timeout=30)
print(cluster.run_dir, flush=True)
os._exit(0)  # like a SIGKILLed pytest or pytest-timeout's thread method: no teardown, no atexit
"""


def test_stale_cluster_of_a_dead_session_is_reaped(slurm_cluster: SlurmCluster) -> None:
    root = tempfile.mkdtemp(prefix="conveyor-slurm-reap-", dir="/tmp")
    os.chmod(root, 0o755)
    stale: SlurmCluster | None = None
    try:
        code = ORPHAN.format(tests=str(Path(__file__).parent))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "CONVEYOR_SLURM_TMPDIR": root})  # fmt: skip
        assert out.returncode == 0, out.stderr
        stale = SlurmCluster(run_dir=Path(out.stdout.strip()), nodename="", cpus=0, memory_mb=0)
        expected = {"munged", "slurmctld", "slurmd", "slurmstepd", "sleep"}
        deadline = time.monotonic() + 10  # RUNNING comes before the batch script execs sleep
        while True:
            pids = stale._leftover_pids()
            names = {comm(pid) for pid in pids}
            if expected <= names:
                break
            assert time.monotonic() < deadline, names
            time.sleep(0.05)
        reap_stale_clusters(root)
        assert not stale.run_dir.exists()
        assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
        assert slurm_cluster.jobs() == []  # the session's own cluster is untouched
        assert slurm_cluster.node_state() == "idle"
    finally:
        if stale is not None:
            stale.stop()  # only does something if the test failed before reaping
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_binaries_skip_or_fail_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(fixtures.slurm, "find_binary", lambda name: None)
    with pytest.raises(outcome, match="install slurm-wlm and munge: bash scripts/install-system-deps.sh"):
        start_slurm_cluster()


def test_parse_scontrol() -> None:
    line = "JobId=7 JobName=a b JobState=FAILED TRES=cpu=1,mem=50M JOB_GRES=gpu:1   Nodes=vm GRES= Power= \n"
    assert parse_scontrol(line) == {
        "JobId": "7", "JobName": "a b", "JobState": "FAILED", "TRES": "cpu=1,mem=50M",
        "JOB_GRES": "gpu:1", "Nodes": "vm", "GRES": "", "Power": "",
    }  # fmt: skip


@pytest.mark.slow
def test_time_limit(slurm: SlurmCluster) -> None:
    """--time is enforced by slurmctld's 30 s sweep: a 1-minute job (the shortest limit: Slurm counts in
    minutes, rounding seconds up) ends after 60-92 s on an idle machine; never before its limit."""
    start = time.monotonic()
    job_id = slurm.submit("sleep 600\n", "--time=1", name="timeout")
    info = slurm.wait_job(job_id, timeout=300)
    elapsed = time.monotonic() - start
    assert (info["JobState"], info["Reason"], info["DerivedExitCode"]) == ("TIMEOUT", "TimeLimit", "0:0")
    # Slurm sends SIGTERM to every process of the step at once: the batch shell is either killed by it
    # ("0:15") or reaps its killed `sleep` first and exits with 128+15 ("143:0"), which of the two
    # depends on scheduling, so under load both are seen. Anything else (a clean exit, SIGKILL) is not.
    assert info["ExitCode"] in ("0:15", "143:0"), info["ExitCode"]
    assert elapsed >= 55, elapsed  # a lower bound only: load can delay the kill, never bring it forward
    assert "DUE TO TIME LIMIT" in Path(info["StdErr"]).read_text()
