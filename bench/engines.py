"""The engine sections of the benchmark: one trivial step on the `slurm`, `ssh`, `ray` and `spark` step operators
against each backend's bare baseline (issues 4 and 5). Each section starts a throw-away engine from tests/fixtures/
where the engine is installed (and we are root where it needs that), stops it at the end, and otherwise reports one
info row saying why it was skipped.

The Slurm section compares one trivial step on a `slurm` step operator with a bare `sbatch` + `squeue` poll of a
script running the same interpreter, plus the cost of the step entrypoint run directly.

The SSH section starts tests/fixtures/sshd.py's throw-away sshd on 127.0.0.1 (a non-root login user, a remote Python
that imports conveyor), and compares one trivial step on an `ssh` step operator with a bare `ssh user@127.0.0.1
PYTHON -c pass` (a fresh connection each time, as the OpenSSH client makes), plus the entrypoint's own cost measured
on the remote side. sshd, its connections, the login user's processes of this session and the remote dirs are
removed at the end.

The Ray section starts tests/fixtures/ray_cluster.py's throw-away single-node head on 127.0.0.1, and compares one
trivial step on a `ray` step operator with a bare `JobSubmissionClient.submit_job` of `PYTHON -c pass` + a
`get_job_status` poll, plus the cost of the step entrypoint run directly.

The Spark section starts tests/fixtures/spark_cluster.py's throw-away standalone master and worker on 127.0.0.1, and
compares one trivial step on a `spark` step operator with a bare `spark-submit` (same master, same --conf) of a
Python file holding `pass`, plus the cost of the step entrypoint run directly.
"""

from __future__ import annotations

import json
import os
import posixpath
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import HERE, PYTHON, Row
from common import env_for as _env
from common import fmt as _fmt
from common import project as _project
from common import run as _run
from common import wall as _wall
from registry_preflight import measure_registry, registry_rows, registry_unavailable

__all__ = ["ENGINES", "engine_sections"]


# -- Slurm (issue 4) ------------------------------------------------------------------------------

SLURM_BINARIES = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "slurmctld", "slurmd", "munged")
SLURM_OPERATOR = "hpc"
SLURM_POLL_INTERVAL = 0.5  # the operator's poll_interval, and the cap of the bare poll's backoff
SLURM_TARGET = 1.3  # issue 4: our step ≤ 1.3 × (bare sbatch + poll + the entrypoint's own cost)
#: How long a submitted job pends depends on where in a ~1 s cycle of slurmctld it arrives (measured on the test
#: cluster: back-to-back jobs pend ~960 ms, jobs submitted 0.3 s after the previous one ended ~640 ms). Each
#: sample therefore first sleeps one of `runs` gaps spread evenly over this period, bare and ours alike, so that
#: both average over the cycle instead of locking to whatever phase their own loop happens to have.
SLURM_PHASE_PERIOD = 1.0


def slurm_unavailable() -> str | None:
    """Why the Slurm section cannot run here, or None."""
    sbin = os.pathsep.join(("/usr/sbin", "/sbin", "/usr/local/sbin"))
    missing = [b for b in SLURM_BINARIES if not (shutil.which(b) or shutil.which(b, path=sbin))]
    if missing:
        return f"Slurm not installed ({', '.join(missing)} missing; bash scripts/install-system-deps.sh)"
    if os.geteuid() != 0:
        return "Slurm installed, but the throw-away cluster needs root (slurmd)"
    import importlib.util

    if importlib.util.find_spec("pytest") is None:
        return "Slurm installed, but tests/fixtures/slurm.py needs pytest: pip install -e '.[dev]'"
    return None


def _start_slurm_cluster() -> Any:
    """tests/fixtures/slurm.py's cluster, with os.environ's SLURM_CONF pointing at it (undone by its stop())."""
    tests = str(HERE.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import pytest  # the fixture skips (pytest.skip) or fails (pytest.fail) when it cannot start a cluster
    from fixtures.slurm import start_slurm_cluster

    try:
        return start_slurm_cluster(set_environ=True)
    except (pytest.skip.Exception, pytest.fail.Exception) as err:
        raise RuntimeError(f"could not start the Slurm test cluster: {err}") from None


def _bare_sbatch_poll(cluster: Any, env: dict[str, str], script: Path, active: set[str]) -> float:
    """Seconds from `sbatch --parsable` to noticing the job left the queue, polling as Conveyor does.

    The same sbatch options as the step operator's (minus --job-name's value), and the same poll: `squeue -h -j ID`
    at once, then after 50 ms, ×1.5 each time, capped at poll_interval, until squeue no longer lists the job or
    lists it in a state that is neither queued nor running.
    """
    out = script.with_suffix(".out")
    t0 = time.perf_counter()
    job_id = _run(["sbatch", "--parsable", "--job-name=bench-bare", f"--output={out}", "--open-mode=append",
                   "--no-requeue", f"--partition={cluster.partition}", str(script)], env).stdout.strip().split(";")[0]
    delay = 0.05
    while True:
        proc = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], env=env, capture_output=True, text=True)
        state = proc.stdout.strip()
        if proc.returncode != 0 or not state or state not in active:
            elapsed = time.perf_counter() - t0
            break
        time.sleep(delay)
        delay = min(delay * 1.5, SLURM_POLL_INTERVAL)
    info = cluster.job(job_id)
    if info.get("JobState") not in (None, "COMPLETED"):
        raise RuntimeError(f"bare Slurm job {job_id} ended {info.get('JobState')}: {out.read_text(errors='replace')}")
    return elapsed


def _entrypoint_command(job_dir: Path) -> tuple[list[str], str]:
    """(command, cwd) of the step entrypoint exactly as the step operator's batch script runs it."""
    command, cwd = None, None
    for line in (job_dir / "job.sh").read_text().splitlines():
        if line.startswith("cd "):
            cwd = shlex.split(line)[1]
        elif line.startswith("exec "):
            command = shlex.split(line)[1:]
    if not command or not cwd:
        raise RuntimeError(f"no `cd`/`exec` line in {job_dir / 'job.sh'}")
    return command, cwd


def _entrypoint_once(command: list[str], cwd: str, env: dict[str, str], job_dir: Path) -> float:
    """Wall time of the step entrypoint run directly (no Slurm) on a finished attempt's job spec."""
    result = job_dir / "result.json"
    result.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or json.loads(result.read_text()).get("status") != "completed":
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def _phase_gaps(runs: int, seed: int, period: float = SLURM_PHASE_PERIOD) -> list[float]:
    """`runs` sleeps spread evenly over `period`, in a shuffled (seeded) order."""
    gaps = [(i + 0.5) * period / runs for i in range(runs)]
    random.Random(seed).shuffle(gaps)
    return gaps


def measure_slurm(runs: int, say: Any) -> dict[str, Any]:
    """Samples (`runs` of each) of a bare sbatch + poll, the entrypoint run directly, and one step on the `slurm`
    step operator (its recorded duration, and the pipeline's wall time on Slurm and in process)."""
    import atexit

    from conveyor.step_operators.slurm.operator import (  # what the step operator treats as not done
        QUEUED,
        RUNNING,
    )

    started = time.perf_counter()
    say("Slurm: starting a throw-away cluster")
    cluster = _start_slurm_cluster()
    project = _project()
    try:
        env = _env(project)  # os.environ now has the cluster's SLURM_CONF, so every Slurm command talks to it
        cli = [PYTHON, "-c", "import sys; from conveyor.cli.main import cli; sys.exit(cli(prog_name='conveyor'))"]
        _run([*cli, "step-operator", "register", SLURM_OPERATOR, "--flavor=slurm", f"--partition={cluster.partition}",
              f"--poll_interval={SLURM_POLL_INTERVAL}"], env)
        _run([*cli, "stack", "update", "default", "-s", SLURM_OPERATOR], env)

        script = Path(cluster.work_dir, "bench-bare.sh")
        script.write_text("#!/bin/bash\n# The bare baseline: the same interpreter, a trivial command.\n"
                          f"set -eo pipefail\ncd {shlex.quote(os.getcwd())}\nexec {shlex.quote(PYTHON)} -c pass\n")
        script.chmod(0o755)
        # Half the bare runs before ours and half after, so that a drift of the machine's load hits both alike.
        active = set(QUEUED) | set(RUNNING)
        before = (runs + 1) // 2
        bare_gaps = _phase_gaps(runs, seed=1)

        def bare_runs(gaps: list[float]) -> list[float]:
            samples = []
            for gap in gaps:
                time.sleep(gap)
                samples.append(_bare_sbatch_poll(cluster, env, script, active))
            return samples

        say(f"Slurm: bare sbatch + poll ({before} of {runs} runs, after a warm-up job)")
        _bare_sbatch_poll(cluster, env, script, active)  # the first job after start-up waits for the scheduler
        bare = bare_runs(bare_gaps[:before])

        say(f"Slurm: 1-step pipeline on the `slurm` step operator and in process ({runs} runs of each)")
        proc = _run([PYTHON, str(HERE / "workloads.py"), "remote1", "--operator", SLURM_OPERATOR,
                     "--repeat", str(runs), "--gaps", *(f"{g:.4f}" for g in _phase_gaps(runs, seed=2))], env)
        ours = json.loads(proc.stdout.strip().splitlines()[-1])
        say(f"Slurm: bare sbatch + poll ({runs - before} of {runs} runs)")
        bare += bare_runs(bare_gaps[before:])

        say(f"Slurm: the step entrypoint run directly ({runs} runs)")
        job_dir = Path(ours["submission"]["data"]["job_dir"])
        command, cwd = _entrypoint_command(job_dir)
        _entrypoint_once(command, cwd, env, job_dir)
        entry = [_entrypoint_once(command, cwd, env, job_dir) for _ in range(runs)]
        bare_python = [_wall([PYTHON, "-c", "pass"], env) for _ in range(runs)]
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)
        shutil.rmtree(project, ignore_errors=True)
    return {"bare": bare, "entrypoint": entry, "python": bare_python, "step": ours["step"], "remote": ours["remote"],
            "inproc": ours["inproc"], "runs": runs, "seconds": time.perf_counter() - started}


def backend_rows(data: dict[str, Any] | None, skipped: str | None, *, backend: str, metric: str, target: float,
                 base: str, bare: str, bare_note: str, entry_note: str, poll_interval: float, where: str,
                 extra: list[Row] | None = None) -> list[Row]:
    """The rows every remote backend shares: the verdict compares means (samples are quantized to poll times, so
    a median jumps by luck), and fewer than 5 runs (--quick) give no verdict."""
    if data is None:
        return [Row(metric, None, target, None, skipped or "", unit="x")]
    keys = ("bare", "entrypoint", "python", "step", "remote", "inproc")
    med = {k: statistics.median(data[k]) for k in keys}
    mean = {k: statistics.fmean(data[k]) for k in keys}
    total, med_total = mean["bare"] + mean["entrypoint"], med["bare"] + med["entrypoint"]
    n = data["runs"]
    return [
        Row(metric, mean["step"] / total, target if n >= 5 else None, None,
            ("too few runs for a verdict; " if n < 5 else "") + f"means of {n}: step duration as recorded / "
            f"({base}) = {_fmt(mean['step'])} / {_fmt(total)}; ratio of medians {med['step'] / med_total:.2f}×",
            unit="x"),
        Row(f"  {backend}: our extra time over bare + entrypoint", mean["step"] - total, None, None,
            f"means; medians: {_fmt(med['step'] - med_total)}"),
        Row(f"  {backend}: {bare}", med["bare"], None, None,
            f"{bare_note}; median of {n} (mean {_fmt(mean['bare'])}, min {_fmt(min(data['bare']))})"),
        Row(f"  {backend}: entrypoint's own cost", med["entrypoint"], None, None,
            f"{entry_note}; median of {n} (`python -c pass` {'there' if backend == 'SSH' else 'alone'}: "
            f"{_fmt(med['python'])})"),
        *(extra or []),
        Row(f"  {backend}: our step, duration as recorded", med["step"], None, None,
            f"poll_interval={poll_interval:g}; median of {n} (mean {_fmt(mean['step'])}, min {_fmt(min(data['step']))})"),
        Row(f"  {backend}: pipeline wall, minus in process", med["remote"] - med["inproc"], None, None,
            f"medians: {_fmt(med['remote'])} {where} − {_fmt(med['inproc'])} in process "
            f"(means: {_fmt(mean['remote'] - mean['inproc'])})"),
    ]


def slurm_rows(slurm: dict[str, Any] | None, skipped: str | None) -> list[Row]:
    """The Slurm rows. The samples are quantized to the shared poll times and to slurmctld's cycle (from ~0.1 s to
    ~1.2 s on the test cluster), so the ratio of two medians of a dozen swings by ±0.4×: the verdict uses means."""
    return backend_rows(slurm, skipped, backend="Slurm", metric="Slurm: our step vs bare sbatch+poll",
                        target=SLURM_TARGET, base="bare + entrypoint", bare="bare sbatch + squeue poll",
                        bare_note="`python -c pass` job, submit → noticed gone",
                        entry_note="python -m conveyor.entrypoints.step_operator, no Slurm",
                        poll_interval=SLURM_POLL_INTERVAL, where="on Slurm")


# -- SSH (issue 4) --------------------------------------------------------------------------------

SSH_OPERATOR = "far"
SSH_POLL_INTERVAL = 0.5  # the operator's poll_interval (polls start at 50 ms and back off ×1.5 up to it)
SSH_TARGET = 1.3  # issue 4: our step ≤ 1.3 × (bare `ssh host python -c pass` + the entrypoint's own cost)
#: Our step's end is noticed at the next status poll, so its duration is quantized to the poll schedule. Each of
#: ours and each bare run first sleeps one of `runs` gaps spread over this period, so that both average over it.
SSH_PHASE_PERIOD = SSH_POLL_INTERVAL

#: Run on the remote host by one `ssh … PYTHON -` (the script on stdin): times, there and without any SSH, the step
#: entrypoint as the step operator's launcher runs it (same argv, cwd and CONVEYOR_CODE_CACHE), the launcher
#: (`remote_launch`, which runs the entrypoint as its child) and `python -c pass`. Prints one JSON object.
_SSH_REMOTE_TIMER = r'''
import json, os, subprocess, sys, time
P = json.loads(sys.argv[1])
env = {**os.environ, **P["env"], "PYTHONUNBUFFERED": "1"}

def once(cmd, result=None):
    if result:
        try:
            os.remove(result)
        except FileNotFoundError:
            pass
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=P["cwd"], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    status = None
    if result:
        try:
            with open(result) as fh:
                status = json.load(fh).get("status")
        except (OSError, ValueError):
            pass
    if proc.returncode != 0 or (result and status != "completed"):
        sys.exit(f"{cmd} failed ({proc.returncode}, result {status}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed

entry, launcher, python = [], [], []
once(P["command"], P["result"])  # warm-up (bytecode, page cache)
for _ in range(P["runs"]):
    entry.append(once(P["command"], P["result"]))
    launcher.append(once(P["launcher"], P["result"]))
    python.append(once([P["command"][0], "-c", "pass"]))
print(json.dumps({"entrypoint": entry, "launcher": launcher, "python": python}))
'''


def ssh_unavailable() -> str | None:
    """Why the SSH section cannot run here, or None."""
    missing = [b for b in ("ssh", "ssh-keygen") if not shutil.which(b)]
    if not os.access("/usr/sbin/sshd", os.X_OK):
        missing.insert(0, "/usr/sbin/sshd")
    if missing:
        return f"OpenSSH not installed ({', '.join(missing)} missing; bash scripts/install-system-deps.sh)"
    if os.geteuid() != 0:
        return "OpenSSH installed, but the throw-away sshd needs root (it creates the login user)"
    import importlib.util

    if importlib.util.find_spec("pytest") is None:
        return "OpenSSH installed, but tests/fixtures/sshd.py needs pytest: pip install -e '.[dev]'"
    if importlib.util.find_spec("asyncssh") is None:
        return "OpenSSH installed, but the `ssh` step operator needs asyncssh: pip install -e '.[ssh]'"
    return None


def _start_sshd() -> Any:
    """tests/fixtures/sshd.py's server: sshd on 127.0.0.1, its login user, key, known_hosts and remote Python."""
    tests = str(HERE.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import pytest  # the fixture skips (pytest.skip) or fails (pytest.fail) when it cannot start sshd
    from fixtures.sshd import start_sshd_server

    try:
        return start_sshd_server()
    except (pytest.skip.Exception, pytest.fail.Exception) as err:
        raise RuntimeError(f"could not start the test sshd: {err}") from None


def _bare_ssh(server: Any) -> float:
    """Seconds of one `ssh user@127.0.0.1 PYTHON -c pass`: a fresh connection (key exchange, public-key login, a
    session channel, the login shell) and the remote interpreter's start, as the OpenSSH client does it."""
    cmd = server.ssh_command(f"{shlex.quote(server.python)} -c pass")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"bare ssh failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed


def _remote_entrypoint_times(server: Any, submission: dict[str, Any], runs: int) -> dict[str, list[float]]:
    """The entrypoint (and the launcher) timed on the remote host itself, on a finished attempt's remote job."""
    data = submission["data"]
    job_dir = data["job_dir"]
    remote_dir = posixpath.dirname(posixpath.dirname(job_dir))  # <remote_dir>/jobs/<job_name>
    launch = json.loads(server.run(f"cat {shlex.quote(posixpath.join(job_dir, 'launch.json'))}", check=True).stdout)
    command = launch["command"]
    params = {"command": command, "cwd": job_dir, "result": data["result"][0], "runs": runs,
              "launcher": [command[0], "-m", "conveyor.step_operators.ssh.remote_launch", job_dir],
              "env": {"CONVEYOR_CODE_CACHE": posixpath.join(remote_dir, "code-cache")}}
    proc = server.run(f"{shlex.quote(server.python)} - {shlex.quote(json.dumps(params))}", input=_SSH_REMOTE_TIMER,
                      timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"timing the entrypoint on the remote host failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_ssh(runs: int, say: Any) -> dict[str, Any]:
    """Samples (`runs` of each) of a bare `ssh … PYTHON -c pass`, the entrypoint (and launcher) timed on the remote
    side, and one step on the `ssh` step operator (its recorded duration, and the pipeline's wall time over SSH and
    in process)."""
    import atexit

    started = time.perf_counter()
    say("SSH: starting a throw-away sshd")
    server = _start_sshd()
    project = _project()
    try:
        env = _env(project)
        cli = [PYTHON, "-c", "import sys; from conveyor.cli.main import cli; sys.exit(cli(prog_name='conveyor'))"]
        _run([*cli, "step-operator", "register", SSH_OPERATOR, "--flavor=ssh", f"--hostname={server.host}",
              f"--port={server.port}", f"--username={server.username}", f"--key_file={server.key_path}",
              f"--known_hosts={server.known_hosts}", f"--python={server.python}",
              f"--remote_dir={server.remote_dir}", f"--poll_interval={SSH_POLL_INTERVAL}"], env)
        _run([*cli, "stack", "update", "default", "-s", SSH_OPERATOR], env)

        # Half the bare runs before ours and half after, so that a drift of the machine's load hits both alike.
        before = (runs + 1) // 2
        bare_gaps = _phase_gaps(runs, seed=1, period=SSH_PHASE_PERIOD)

        def bare_runs(gaps: list[float]) -> list[float]:
            samples = []
            for gap in gaps:
                time.sleep(gap)
                samples.append(_bare_ssh(server))
            return samples

        say(f"SSH: bare ssh PYTHON -c pass ({before} of {runs} runs, after a warm-up)")
        _bare_ssh(server)
        bare = bare_runs(bare_gaps[:before])

        say(f"SSH: 1-step pipeline on the `ssh` step operator and in process ({runs} runs of each)")
        gaps = _phase_gaps(runs, seed=2, period=SSH_PHASE_PERIOD)
        proc = _run([PYTHON, str(HERE / "workloads.py"), "remote1", "--operator", SSH_OPERATOR,
                     "--repeat", str(runs), "--gaps", *(f"{g:.4f}" for g in gaps)], env)
        ours = json.loads(proc.stdout.strip().splitlines()[-1])
        say(f"SSH: bare ssh PYTHON -c pass ({runs - before} of {runs} runs)")
        bare += bare_runs(bare_gaps[before:])

        say(f"SSH: the step entrypoint and the launcher timed on the remote side ({runs} runs of each)")
        remote = _remote_entrypoint_times(server, ours["submission"], runs)
    finally:
        try:
            server.stop()  # sshd, its connections, this session's remote processes, remote_dir and the run dir
        finally:
            atexit.unregister(server.stop)
            shutil.rmtree(project, ignore_errors=True)
    return {"bare": bare, "entrypoint": remote["entrypoint"], "launcher": remote["launcher"],
            "python": remote["python"], "step": ours["step"], "remote": ours["remote"], "inproc": ours["inproc"],
            "runs": runs, "seconds": time.perf_counter() - started}


def ssh_rows(ssh: dict[str, Any] | None, skipped: str | None) -> list[Row]:
    """The SSH rows, plus the remote launcher's own cost (part of our extra time)."""
    extra = None
    if ssh is not None:
        launcher, entrypoint = statistics.median(ssh["launcher"]), statistics.median(ssh["entrypoint"])
        extra = [Row("  SSH: launcher's own cost", launcher - entrypoint, None, None,
                     f"part of our extra time: python -m …ssh.remote_launch (runs the entrypoint as its child), remote "
                     f"side, minus the entrypoint; medians of {ssh['runs']}: {_fmt(launcher)} − {_fmt(entrypoint)}")]
    return backend_rows(ssh, skipped, backend="SSH", metric="SSH: our step vs bare ssh", target=SSH_TARGET,
                        base="bare ssh + entrypoint", bare="bare ssh PYTHON -c pass",
                        bare_note="fresh connection each time, start → exit",
                        entry_note="python -m conveyor.entrypoints.step_operator timed on the remote side, no SSH",
                        poll_interval=SSH_POLL_INTERVAL, where="over SSH", extra=extra)


# -- Ray (issue 5) --------------------------------------------------------------------------------

RAY_OPERATOR = "rayop"
RAY_POLL_INTERVAL = 0.2  # the operator's poll_interval, and the cap of the bare poll's backoff
RAY_TARGET = 1.3  # issue 5: our step ≤ 1.3 × (bare submit_job + get_job_status poll + the entrypoint's own cost)
#: Our step's end is noticed at the next status poll; each run (bare and ours) first sleeps one of `runs` gaps
#: spread over this period, so that both average over the poll schedule.
RAY_PHASE_PERIOD = RAY_POLL_INTERVAL


def ray_unavailable() -> str | None:
    """Why the Ray section cannot run here, or None."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return "ray not installed: pip install -e '.[ray]'"
    if not Path(PYTHON).with_name("ray").exists():
        return f"the `ray` command is not beside {PYTHON}: pip install -e '.[ray]'"
    if importlib.util.find_spec("pytest") is None:
        return "ray installed, but tests/fixtures/ray_cluster.py needs pytest: pip install -e '.[dev]'"
    return None


def _start_ray_cluster() -> Any:
    """tests/fixtures/ray_cluster.py's head; os.environ gets its RAY_* variables and PATH (undone by its stop())."""
    tests = str(HERE.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import pytest  # the fixture skips (pytest.skip) or fails (pytest.fail) when it cannot start a head
    from fixtures.ray_cluster import start_ray_cluster

    try:
        return start_ray_cluster()
    except (pytest.skip.Exception, pytest.fail.Exception) as err:
        raise RuntimeError(f"could not start the Ray head: {err}") from None


def _bare_ray_job(client: Any) -> float:
    """Seconds from `submit_job` of a `PYTHON -c pass` job to noticing it ended, polling as Conveyor does:
    `get_job_status` at once, then after 50 ms, ×1.5 each time, capped at poll_interval."""
    t0 = time.perf_counter()
    sid = client.submit_job(entrypoint=f"{shlex.quote(PYTHON)} -c pass")
    delay = 0.05
    while True:
        status = client.get_job_status(sid)
        if status.is_terminal():
            elapsed = time.perf_counter() - t0
            break
        time.sleep(delay)
        delay = min(delay * 1.5, RAY_POLL_INTERVAL)
    if str(getattr(status, "value", status)) != "SUCCEEDED":
        raise RuntimeError(f"bare Ray job {sid} ended {status}: {client.get_job_logs(sid)[-2000:]}")
    return elapsed


def _ray_entrypoint(client: Any, sid: str, env: dict[str, str]) -> tuple[list[str], dict[str, str], Path]:
    """(command, env, job dir) of a finished step job's entrypoint as Ray ran it, minus the cancel guard."""
    info = client.get_job_info(sid)
    command = shlex.split(info.entrypoint)
    if "conveyor.step_operators.ray.guard" in command and "--" in command:
        command = command[command.index("--") + 1:]
    job = command[command.index("--job") + 1]
    job_dir = Path(job.removeprefix("file://")).parent
    env_vars = ((info.runtime_env or {}).get("env_vars") or {})
    return command, {**env, **env_vars}, job_dir


def measure_ray(runs: int, say: Any) -> dict[str, Any]:
    """Samples (`runs` of each) of a bare submit_job + get_job_status poll, the entrypoint run directly, and one
    step on the `ray` step operator (its recorded duration, and the pipeline's wall time on Ray and in process)."""
    import atexit

    started = time.perf_counter()
    say("Ray: starting a throw-away head")
    cluster = _start_ray_cluster()
    project = _project()
    try:
        env = _env(project)  # os.environ now has the head's RAY_* variables and the venv first on PATH
        cli = [PYTHON, "-c", "import sys; from conveyor.cli.main import cli; sys.exit(cli(prog_name='conveyor'))"]
        _run([*cli, "step-operator", "register", RAY_OPERATOR, "--flavor=ray", f"--address={cluster.address}",
              f"--poll_interval={RAY_POLL_INTERVAL}"], env)
        _run([*cli, "stack", "update", "default", "-s", RAY_OPERATOR], env)
        client = cluster.client()

        # Half the bare runs before ours and half after, so that a drift of the machine's load hits both alike.
        before = (runs + 1) // 2
        bare_gaps = _phase_gaps(runs, seed=1, period=RAY_PHASE_PERIOD)

        def bare_runs(gaps: list[float]) -> list[float]:
            samples = []
            for gap in gaps:
                time.sleep(gap)
                samples.append(_bare_ray_job(client))
            return samples

        say(f"Ray: bare submit_job + get_job_status poll ({before} of {runs} runs, after a warm-up job)")
        _bare_ray_job(client)  # the first job after start-up pays for the head's warm-up
        bare = bare_runs(bare_gaps[:before])

        say(f"Ray: 1-step pipeline on the `ray` step operator and in process ({runs} runs of each)")
        gaps = _phase_gaps(runs, seed=2, period=RAY_PHASE_PERIOD)
        proc = _run([PYTHON, str(HERE / "workloads.py"), "remote1", "--operator", RAY_OPERATOR,
                     "--repeat", str(runs), "--gaps", *(f"{g:.4f}" for g in gaps)], env)
        ours = json.loads(proc.stdout.strip().splitlines()[-1])
        say(f"Ray: bare submit_job + get_job_status poll ({runs - before} of {runs} runs)")
        bare += bare_runs(bare_gaps[before:])

        say(f"Ray: the step entrypoint run directly ({runs} runs)")
        command, entry_env, job_dir = _ray_entrypoint(client, ours["submission"]["data"]["submission_id"], env)
        _entrypoint_once(command, os.getcwd(), entry_env, job_dir)
        entry = [_entrypoint_once(command, os.getcwd(), entry_env, job_dir) for _ in range(runs)]
        bare_python = [_wall([PYTHON, "-c", "pass"], env) for _ in range(runs)]
    finally:
        try:
            cluster.stop()  # running jobs, the head's process group, stragglers, its temp dir; restores os.environ
        finally:
            atexit.unregister(cluster.stop)
            shutil.rmtree(project, ignore_errors=True)
    return {"bare": bare, "entrypoint": entry, "python": bare_python, "step": ours["step"], "remote": ours["remote"],
            "inproc": ours["inproc"], "runs": runs, "seconds": time.perf_counter() - started}


def ray_rows(ray: dict[str, Any] | None, skipped: str | None) -> list[Row]:
    """The Ray rows."""
    return backend_rows(ray, skipped, backend="Ray", metric="Ray: our step vs bare Jobs API", target=RAY_TARGET,
                        base="bare + entrypoint", bare="bare submit_job + get_job_status poll",
                        bare_note="`python -c pass` job, submit → noticed done",
                        entry_note="python -m conveyor.entrypoints.step_operator, no Ray",
                        poll_interval=RAY_POLL_INTERVAL, where="on Ray")


# -- Spark (issue 5) ------------------------------------------------------------------------------

SPARK_OPERATOR = "sparkop"
SPARK_TARGET = 1.2  # issue 5: our step ≤ 1.2 × (bare spark-submit + the entrypoint's own cost)


def spark_unavailable() -> str | None:
    """Why the Spark section cannot run here, or None."""
    import importlib.util

    if importlib.util.find_spec("pyspark") is None:
        return "pyspark not installed: pip install -e '.[spark]'"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java for spark-submit: bash scripts/install-system-deps.sh (openjdk-17-jre-headless)"
    if importlib.util.find_spec("pytest") is None:
        return "pyspark installed, but tests/fixtures/spark_cluster.py needs pytest: pip install -e '.[dev]'"
    return None


def _start_spark_cluster() -> Any:
    """tests/fixtures/spark_cluster.py's master and worker."""
    tests = str(HERE.parent / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import pytest  # the fixture skips (pytest.skip) or fails (pytest.fail) when it cannot start a cluster
    from fixtures.spark_cluster import start_spark_cluster

    try:
        return start_spark_cluster()
    except (pytest.skip.Exception, pytest.fail.Exception) as err:
        raise RuntimeError(f"could not start the Spark cluster: {err}") from None


def _bare_spark_submit(cluster: Any, env: dict[str, str], script: Path) -> float:
    """Seconds from starting spark-submit of a `pass` script (the operator's master and --conf) to its exit: the
    step operator notices spark-submit's exit the moment it happens (it waits on the process), so no poll here."""
    command = [str(cluster.home / "bin" / "spark-submit"), "--master", cluster.master, "--deploy-mode", "client",
               "--name", "bench-bare", "--conf", f"spark.pyspark.python={PYTHON}",
               "--conf", f"spark.pyspark.driver.python={PYTHON}", "--conf", "spark.ui.showConsoleProgress=false",
               *(a for k, v in sorted(cluster.operator_conf.items()) for a in ("--conf", f"{k}={v}")), str(script)]
    return _wall(command, {**env, "SPARK_HOME": str(cluster.home), "PYSPARK_PYTHON": PYTHON})


def _spark_entrypoint(submission: dict[str, Any], env: dict[str, str]) -> tuple[list[str], dict[str, str], Path]:
    """(command, env, job dir) of a finished step's entrypoint as the driver ran it, read from the first line of
    its log (the spark-submit command the operator ran), without spark-submit and the driver file."""
    log_path = Path(submission["data"]["log_path"])
    first = log_path.read_text().splitlines()[0]
    argv = shlex.split(first.removeprefix("$ "))
    driver = next(i for i, a in enumerate(argv) if a.endswith("/step_operators/spark/driver.py"))
    command = [PYTHON, "-m", "conveyor.entrypoints.step_operator", *argv[driver + 1:]]
    job = command[command.index("--job") + 1]
    step_env = {"CONVEYOR_STEP_NAME": command[command.index("--step_name") + 1],
                "CONVEYOR_STEP_RUN_ID": command[command.index("--step_run_id") + 1]}
    return command, {**env, **step_env}, Path(job).parent


def measure_spark(runs: int, say: Any) -> dict[str, Any]:
    """Samples (`runs` of each) of a bare spark-submit of `pass`, the entrypoint run directly, and one step on the
    `spark` step operator (its recorded duration, and the pipeline's wall time on Spark and in process)."""
    import atexit

    started = time.perf_counter()
    say("Spark: starting a throw-away standalone master and worker")
    cluster = _start_spark_cluster()
    project = _project()
    try:
        env = _env(project)
        cli = [PYTHON, "-c", "import sys; from conveyor.cli.main import cli; sys.exit(cli(prog_name='conveyor'))"]
        _run([*cli, "step-operator", "register", SPARK_OPERATOR, "--flavor=spark", f"--master={cluster.master}",
              f"--master_webui={cluster.webui}", f"--conf={json.dumps(cluster.operator_conf)}"], env)
        _run([*cli, "stack", "update", "default", "-s", SPARK_OPERATOR], env)
        script = project / "bare_spark.py"
        script.write_text("pass\n")

        # Half the bare runs before ours and half after, so that a drift of the machine's load hits both alike.
        before = (runs + 1) // 2
        say(f"Spark: bare spark-submit of `pass` ({before} of {runs} runs, after a warm-up)")
        _bare_spark_submit(cluster, env, script)
        bare = [_bare_spark_submit(cluster, env, script) for _ in range(before)]
        say(f"Spark: 1-step pipeline on the `spark` step operator and in process ({runs} runs of each)")
        proc = _run([PYTHON, str(HERE / "workloads.py"), "remote1", "--operator", SPARK_OPERATOR,
                     "--repeat", str(runs)], env)
        ours = json.loads(proc.stdout.strip().splitlines()[-1])
        say(f"Spark: bare spark-submit of `pass` ({runs - before} of {runs} runs)")
        bare += [_bare_spark_submit(cluster, env, script) for _ in range(runs - before)]

        say(f"Spark: the step entrypoint run directly ({runs} runs)")
        command, entry_env, job_dir = _spark_entrypoint(ours["submission"], env)
        _entrypoint_once(command, os.getcwd(), entry_env, job_dir)
        entry = [_entrypoint_once(command, os.getcwd(), entry_env, job_dir) for _ in range(runs)]
        bare_python = [_wall([PYTHON, "-c", "pass"], env) for _ in range(runs)]
    finally:
        try:
            cluster.stop()  # the worker's and the master's process groups, stragglers, its temp dir
        finally:
            atexit.unregister(cluster.stop)
            shutil.rmtree(project, ignore_errors=True)
    return {"bare": bare, "entrypoint": entry, "python": bare_python, "step": ours["step"], "remote": ours["remote"],
            "inproc": ours["inproc"], "runs": runs, "seconds": time.perf_counter() - started}


def spark_rows(spark: dict[str, Any] | None, skipped: str | None) -> list[Row]:
    """The Spark rows."""
    return backend_rows(spark, skipped, backend="Spark", metric="Spark: our step vs bare spark-submit",
                        target=SPARK_TARGET, base="bare + entrypoint", bare="bare spark-submit of `pass`",
                        bare_note="client mode, same master and --conf, start → exit",
                        entry_note="python -m conveyor.entrypoints.step_operator, no Spark",
                        poll_interval=0.2, where="on Spark")


#: name → (why it cannot run here or None, measure(runs, say), rows(data, skipped), runs in full mode)
ENGINES: dict[str, tuple[Callable[[], str | None], Callable[..., dict[str, Any]], Callable[..., list[Row]], int]] = {
    "slurm": (slurm_unavailable, measure_slurm, slurm_rows, 12),
    "ssh": (ssh_unavailable, measure_ssh, ssh_rows, 8),
    "ray": (ray_unavailable, measure_ray, ray_rows, 8),
    "spark": (spark_unavailable, measure_spark, spark_rows, 6),  # a spark-submit costs seconds: 6 keeps it near 2 min
    "registry": (registry_unavailable, measure_registry, registry_rows, 8),  # bench/registry_preflight.py (issue 17)
}


def engine_sections(skip: set[str], quick: bool, say: Callable[[str], None]) -> tuple[list[Row], dict[str, Any]]:
    """Every engine section in turn: (their rows, their raw data or why skipped). A section that fails is reported
    (its row says so) and the others still run."""
    rows: list[Row] = []
    raw: dict[str, Any] = {}
    for name, (unavailable, measure, to_rows, full_runs) in ENGINES.items():
        data: dict[str, Any] | None = None
        skipped = f"skipped (--no-{name})" if name in skip else unavailable()
        label = {"ssh": "SSH"}.get(name, name.capitalize())
        if skipped is None:
            try:
                data = measure(2 if quick else full_runs, say)
            except Exception as err:  # noqa: BLE001 - report it; the other sections' results still stand
                failed = f"{type(err).__name__}: {err}"
                say(f"{label} section failed: {failed}")
                skipped = "failed: " + failed.splitlines()[0][:100]
        else:
            say(f"{label} section skipped: {skipped}")
        rows += to_rows(data, skipped)
        raw[name] = data if data is not None else {"skipped": skipped}
    return rows, raw
