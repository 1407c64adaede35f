"""What only the SSH flavor does, against the real sshd the suite starts (the shared contract is in conformance/).

The "host" is this machine reached over SSH as the unprivileged test user `conveyor-ssh`; the artifact store is the
project's local one, so every step here ships its job spec, code archive and inputs and brings its outputs back.
"""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from steps_lib import make_numbers

from conveyor import Client, pipeline, step
from conveyor.context import get_context
from conveyor.exceptions import ResourceUnavailableError
from conveyor.step_operators.info import Submission


@pytest.fixture
def ssh_op(sshd_server, step_operator, tmp_path):
    """Registers an ssh operator named "box" (extra config per call) with a fresh remote_dir per test."""
    def register(name: str = "box", **config: Any) -> str:
        base = {"hostname": sshd_server.host, "port": sshd_server.port, "username": sshd_server.username,
                "key_file": str(sshd_server.key_path), "known_hosts": str(sshd_server.known_hosts),
                "python": sshd_server.python, "poll_interval": 0.2,
                "remote_dir": f"{sshd_server.remote_dir}/{tmp_path.name}"}
        step_operator(name, "ssh", **{**base, **config})
        return name

    return register


def _steps() -> SimpleNamespace:
    """Defined in a function, so they travel pickled by value: this module imports pytest, which the host lacks."""

    @step
    def slow_sum(values: list[int], seconds: float = 2.0) -> int:
        print("started", flush=True)
        time.sleep(seconds)
        print("finished", flush=True)
        return sum(values)


    @step
    def gpu_env(seconds: float = 1.5) -> dict:
        start = time.time()
        time.sleep(seconds)
        return {"cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}


    @step
    def with_grandchild() -> int:
        import subprocess

        subprocess.Popen(["sleep", "987"])  # a child in the step's process group, not waited for
        # and a daemon: its own session (out of the group), its parent gone at once (out of the step's tree)
        subprocess.run(["setsid", "sh", "-c", "sleep 988 </dev/null >/dev/null 2>&1 &"], check=True)
        print("started", flush=True)
        time.sleep(300)
        return 0


    @step
    def reads_secret(seconds: float = 2.0, release: str = "") -> str:
        """Runs `seconds`, or with `release`, until that file exists on the host (a test looks at it meanwhile)."""
        print("started", flush=True)
        deadline = time.monotonic() + 300
        if release:
            while not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            time.sleep(seconds)
        return os.environ.get("API_TOKEN", "")

    return SimpleNamespace(slow_sum=slow_sum, gpu_env=gpu_env, with_grandchild=with_grandchild, reads_secret=reads_secret)


S = _steps()


def _start(p) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def go() -> None:
        try:
            result["run"] = p()
        except BaseException as err:  # noqa: BLE001 - inspected by the test
            result["error"] = err

    runner = threading.Thread(target=go, daemon=True)
    runner.start()
    return runner, result


def _wait_for_log(step_name: str, text: str, timeout: float = 60) -> Any:
    client = Client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.list_pipeline_runs()
        if runs:
            step_run = client.get_pipeline_run(runs[0].id).steps[step_name]
            if text in step_run.logs():
                return step_run
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in the logs of {step_name}")


def _remote_lines(server, needle: str) -> list[str]:
    return [line for line in server.processes() if needle in line]


def test_a_dropped_connection_mid_step_does_not_fail_it(ssh_op, sshd_server) -> None:
    from conveyor.step_operators.ssh import operator as ssh

    name = ssh_op()

    @pipeline(enable_cache=False)
    def p():
        S.slow_sum.with_options(step_operator=name)(make_numbers(4), seconds=3)

    runner, result = _start(p)
    running = _wait_for_log("slow_sum", "started")
    client = ssh._client(get_context().load_stack().step_operator(name).config)
    connects = client.connects
    assert ssh.drop_connections() >= 1  # the TCP connection just goes away, as on a network failure
    # and again and again while the step runs, so commands (status polls, log reads) are cut mid-flight
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        time.sleep(0.07)
        ssh.drop_connections()
    runner.join(timeout=60)
    assert "error" not in result, result.get("error")
    step_run = result["run"].steps["slow_sum"]
    assert step_run.status == "completed" and step_run.attempt == 1
    assert step_run.outputs["output"].load() == 6  # brought back into the local artifact store
    assert client.connects > connects  # re-attached over a new connection
    assert "finished" in step_run.logs()  # the log stream survived as well
    assert _remote_lines(sshd_server, running.id) == []


def test_two_concurrent_gpu_steps_get_different_gpus(ssh_op) -> None:
    name = ssh_op(gpu_indices=[0, 1])

    @pipeline(enable_cache=False)
    def p():
        S.gpu_env.with_options(step_operator=name, settings={"resources": {"gpu_count": 1}}, name="a")()
        S.gpu_env.with_options(step_operator=name, settings={"resources": {"gpu_count": 1}}, name="b")()

    run = p()
    a, b = (run.steps[s].outputs["output"].load() for s in ("a", "b"))
    assert a["start"] < b["end"] and b["start"] < a["end"], "the two steps did not overlap"
    assert {a["cuda"], b["cuda"]} == {"0", "1"}


def test_a_step_waits_queued_for_a_busy_gpu(ssh_op) -> None:
    name = ssh_op(gpu_indices=[3])

    @pipeline(enable_cache=False)
    def p():
        S.gpu_env.with_options(step_operator=name, settings={"resources": {"gpu_count": 1}}, name="a")(seconds=1.0)
        S.gpu_env.with_options(step_operator=name, settings={"resources": {"gpu_count": 1}}, name="b")(seconds=1.0)

    run = p()
    a, b = (run.steps[s].outputs["output"].load() for s in ("a", "b"))
    assert a["cuda"] == b["cuda"] == "3"
    first, second = sorted((a, b), key=lambda r: r["start"])
    assert second["start"] >= first["end"], "two steps held the one GPU at once"


def test_more_gpus_than_gpu_indices_is_refused_before_anything_runs(ssh_op) -> None:
    name = ssh_op(gpu_indices=[0, 1])

    @pipeline(enable_cache=False)
    def p():
        S.gpu_env.with_options(step_operator=name, settings={"resources": {"gpu_count": 3}})()

    with pytest.raises(ResourceUnavailableError, match=r"gpu_count=3 .* 2 GPU\(s\)"):
        p()
    assert Client().list_pipeline_runs() == []


def test_cancel_from_the_receipt_kills_the_remote_process_group_and_what_left_it(ssh_op, sshd_server) -> None:
    name = ssh_op()

    @pipeline(enable_cache=False)
    def p():
        S.with_grandchild.with_options(step_operator=name)()

    runner, result = _start(p)
    running = _wait_for_log("with_grandchild", "started")
    deadline = time.monotonic() + 10
    while not (_remote_lines(sshd_server, "sleep 987") and _remote_lines(sshd_server, "sleep 988")):
        assert time.monotonic() < deadline, sshd_server.processes()
        time.sleep(0.05)
    pgid = running.submission["data"]["pgid"]
    # As `conveyor run stop` does: a fresh operator that never saw the job, and only the stored receipt.
    fresh = get_context().load_stack().step_operator(name)
    receipt = Submission.from_json(running.submission)
    fresh.cancel(receipt)
    assert _remote_lines(sshd_server, "sleep 987") == []
    assert _remote_lines(sshd_server, "sleep 988") == [], "a daemon the step started with setsid survived the cancel"
    assert _remote_lines(sshd_server, running.id) == []
    out = sshd_server.run(f"ps -eo pgid=,stat= | awk '$1=={pgid} && $2 !~ /^Z/'", check=True)
    assert out.stdout.strip() == "", out.stdout
    fresh.cancel(receipt)  # idempotent, also after the job is gone
    runner.join(timeout=60)
    assert not runner.is_alive()
    final = Client().get_pipeline_run(Client().list_pipeline_runs()[0].id)
    # a job cancelled outside the run's own stop is recorded as `stopped` (launcher: "cancelled" -> stopped)
    assert final.steps["with_grandchild"].status == "stopped"


def test_the_env_file_is_private_and_secrets_never_reach_argv(ssh_op, sshd_server, tmp_path) -> None:
    name = ssh_op()
    secret = "tok-5e2f9a-never-in-argv"
    release = f"{sshd_server.remote_dir}/{tmp_path.name}/release"  # the step runs until the test has looked

    @pipeline(enable_cache=False)
    def p():
        S.reads_secret.with_options(step_operator=name,
                                  settings={"step_operator.ssh": {"environment": {"API_TOKEN": secret}}})(release=release)

    runner, result = _start(p)
    running = _wait_for_log("reads_secret", "started")
    job_dir = running.submission["data"]["job_dir"]
    out = sshd_server.run(f"stat -c '%a %U' {job_dir}/env.sh", check=True)
    assert out.stdout.split() == ["600", sshd_server.username]
    argv = sshd_server.run(f"ps -u {sshd_server.username} -o args=", check=True).stdout
    assert running.id in argv  # we are looking at the running step's processes
    assert secret not in argv
    assert secret not in str(running.submission)
    sshd_server.run(f"touch {release}", check=True)
    runner.join(timeout=60)
    assert "error" not in result, result.get("error")
    assert result["run"].steps["reads_secret"].outputs["output"].load() == secret
    assert sshd_server.run(f"test -e {job_dir}/env.sh").returncode == 1  # removed by cleanup()


def test_what_a_step_saves_on_the_host_comes_back_and_loads_by_name(ssh_op) -> None:
    """save_artifact() on the host writes under the host's copy of the store: it comes back with the outputs and is
    recorded where it now is, so it loads by name here, and a later step finds it."""
    from conveyor import load_artifact

    op = ssh_op()

    def saves() -> int:
        from conveyor import load_artifact, save_artifact

        save_artifact({"rows": [1, 2, 3]}, name="ssh_report")
        return sum(load_artifact("ssh_report")["rows"])  # what the step saved itself loads there too

    @pipeline(enable_cache=False)
    def p():
        step(saves).with_options(step_operator=op)()

    run = p()
    assert run.steps["saves"].outputs["output"].load() == 6
    version = Client().get_artifact_version("ssh_report")
    root = get_context().load_stack().artifact_store.artifact_store().root
    assert version.uri.startswith(root + "/"), version.uri
    assert load_artifact("ssh_report") == {"rows": [1, 2, 3]}
