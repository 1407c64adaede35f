"""What only the Spark flavor does, on the real standalone master and worker the suite starts (the shared contract
is in conformance/), plus the mapping of settings onto spark-submit, which needs no cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from spark_steps import check_totals, numbers_to, spark_totals, total_of

from conveyor import Client, pipeline, step
from conveyor.config import ResourceSettings
from conveyor.context import get_context
from conveyor.exceptions import ConfigError, ResourceUnavailableError
from conveyor.execution.launcher import build_step_info, entrypoint_request
from conveyor.utils.procs import pids_with_marker

TESTS = Path(__file__).parent
ROWS = 1000


@pytest.fixture
def spark_op(spark_cluster, step_operator) -> str:
    step_operator("sparkc", "spark", **spark_cluster.operator_config)
    return "sparkc"


@step
def noop() -> int:
    return 1


def _info(operator_name: str, settings: dict | None = None, attempt: int = 1,
          step_run_id: str = "0123456789abcdef0123"):
    """StepRunInfo of `noop` on the named operator, and that operator, as the launcher builds them."""

    @pipeline
    def p():
        noop.with_options(step_operator=operator_name, settings=settings or {})()

    stack = get_context().load_stack()
    operator = stack.step_operator(operator_name)
    info = build_step_info(stack, p.compile(), "noop", operator, run_id="r1", run_name="r1",
                           step_run_id=step_run_id, attempt=attempt, attempt_uri="/tmp/attempt")
    return operator, info


# -- a real pipeline on the cluster ------------------------------------------------------------------------------

def test_a_spark_step_aggregates_a_generated_dataset_for_the_next_plain_step(spark_op: str, spark_cluster) -> None:
    @pipeline(enable_cache=False)
    def p():
        result = spark_totals.with_options(step_operator=spark_op, settings={
            "resources": ResourceSettings(cpu_count=1, memory="512MB")})(rows=ROWS)
        check_totals(result, rows=ROWS)

    run = p()
    assert run.steps["check_totals"].outputs["output"].load() == {"groups": 4, "rows": ROWS}
    step_run = run.steps["spark_totals"]
    out = step_run.outputs["output"].load()
    data = step_run.submission["data"]
    # the step was the driver of a real application on the standalone master, named after the attempt
    assert out["master"] == spark_cluster.master
    assert out["app_name"] == data["app_name"] == step_run.submission["job_name"]
    assert out["executor_cores"] == "1" and out["executor_memory"] == "489m"  # 512 MB = 488.3 MiB, rounded up
    apps = spark_cluster.apps_named(data["app_name"])
    assert [a["id"] for a in apps] == [out["app_id"]], apps
    assert apps[0]["state"] == "FINISHED" and not apps[0]["active"]  # the driver stopped its session cleanly
    assert apps[0]["memoryperexecutor"] == 489
    assert apps[0]["cores"] == 2  # no num_executors: standalone gives the app every free core, 1 per executor
    # the UDF and the map ran in executor Python workers, not in the step's process
    assert out["driver_pid"] not in out["executor_python_pids"]
    assert "Traceback" not in step_run.logs()
    assert spark_cluster.running_apps() == [] and spark_cluster.executor_pids() == []


HANGING = textwrap.dedent('''
    import sys
    sys.path.insert(0, {tests!r})
    from conveyor import pipeline
    from spark_steps import spark_hangs

    @pipeline(enable_cache=False)
    def hanging():
        spark_hangs.with_options(step_operator={operator!r})(seconds=300)

    if __name__ == "__main__":
        hanging()
''')


def test_cancel_kills_the_application_and_its_executors(spark_op: str, spark_cluster, project: Path) -> None:
    script = project / "hanging.py"
    script.write_text(HANGING.format(tests=str(TESTS), operator=spark_op))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=project, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "CONVEYOR_QUIET": "1"})
    client = Client()
    deadline = time.monotonic() + 120
    step_run = None
    while time.monotonic() < deadline:
        runs = client.list_pipeline_runs()
        step_run = client.get_pipeline_run(runs[0].id).steps["spark_hangs"] if runs else None
        if step_run is not None and "app-up" in step_run.logs() and spark_cluster.executor_pids():
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"the Spark step did not get executors: {step_run.logs() if step_run else 'no run'}")
    name = step_run.submission["data"]["app_name"]
    assert [a["active"] for a in spark_cluster.apps_named(name)] == [True]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=90)
    final = client.get_pipeline_run(runs[0].id)
    assert final.steps["spark_hangs"].status == "stopped"
    # cancel() returns only once the master has dropped the application: nothing is left to wait for
    apps = spark_cluster.apps_named(name)
    assert [a["active"] for a in apps] == [False], apps
    assert spark_cluster.executor_pids() == []
    assert pids_with_marker(f"--step_run_id {final.steps['spark_hangs'].id}") == []
    assert pids_with_marker(f"--name {name} ") == []


def test_a_request_no_worker_can_hold_is_refused_before_submission(spark_op: str, spark_cluster) -> None:
    before = len(spark_cluster.completed_apps()) + len(spark_cluster.running_apps())
    cases = [
        ({"step_operator.spark": {"executor_memory": "8g"}}, r"executors of 8g \(largest worker: 2048 MiB\)"),
        ({"resources": {"memory": "64TB"}}, r"a driver of 61035157m but the driver runs on this machine"),
        ({"step_operator.spark": {"executor_cores": 3}}, r"executor_cores=3 \(largest worker: 2 cores\)"),
        ({"resources": {"gpu_count": 1}}, r"gpu_count=1 \(largest worker: 0 GPUs\)"),
    ]
    for settings, message in cases:
        @pipeline(enable_cache=False)
        def p():
            noop.with_options(step_operator=spark_op, settings=settings)()

        with pytest.raises(ResourceUnavailableError, match=message):
            p()
    assert Client().list_pipeline_runs() == []
    assert len(spark_cluster.completed_apps()) + len(spark_cluster.running_apps()) == before


def test_a_spark_step_reads_and_writes_a_remote_artifact_store(spark_cluster, s3_server, s3_bucket, step_operator,
                                                                monkeypatch, tmp_path: Path) -> None:
    """With an S3 store the code archive is fetched once into the code cache for --py-files; the credentials reach
    the driver through spark-submit's environment, never its command line."""
    from conveyor.context import reset_contexts

    ctx = get_context()
    ctx.ensure_defaults()
    store_id = ctx.store.create_component("artifact_store", "s3store", "s3", {
        "path": f"s3://{s3_bucket}/conveyor", "endpoint_url": s3_server.endpoint_url})
    ctx.store.create_stack("cloud", [ctx.store.get_component("orchestrator", "default")["id"], store_id])
    monkeypatch.setenv("CONVEYOR_STACK", "cloud")
    monkeypatch.setenv("CONVEYOR_CODE_CACHE", str(tmp_path / "code-cache"))
    reset_contexts()
    step_operator("sparks3", "spark", stack="cloud", **spark_cluster.operator_config)

    @pipeline(enable_cache=False)
    def on_s3():
        total_of.with_options(step_operator="sparks3")(numbers_to(5))

    run = on_s3()
    step_run = run.steps["total_of"]
    assert step_run.outputs["output"].load() == 10
    assert step_run.outputs["output"].uri.startswith(f"s3://{s3_bucket}/conveyor/")
    logs = step_run.logs()
    assert "summing 5 numbers" in logs
    submitted = logs.splitlines()[0]
    assert submitted.startswith("$ ") and "--py-files" in submitted
    archive = submitted.split("--py-files ", 1)[1].split()[0]
    assert archive.startswith(str(tmp_path / "code-cache" / "spark")) and archive.endswith(".zip")
    assert "conveyor-test-secret" not in submitted and "AWS_SECRET_ACCESS_KEY" not in submitted


# -- settings onto spark-submit, no cluster ----------------------------------------------------------------------

def test_resources_and_settings_become_spark_submit_arguments(step_operator) -> None:
    step_operator("sp", "spark", master="spark://spark-master.example:7077", master_webui="none",
                  python="/opt/venv/bin/python", executor_python="/opt/worker/bin/python",
                  conf={"spark.executor.memory": "1g", "spark.eventLog.enabled": True},
                  submit_args=["--packages", "org.example:thing:1.0"])
    operator, info = _info("sp", {"resources": ResourceSettings(cpu_count=1.5, memory="2GiB", gpu_count=1)})
    assert operator.sizes(info) == {
        "spark.executor.cores": "2", "spark.driver.cores": "2", "spark.executor.memory": "2048m",
        "spark.driver.memory": "2048m", "spark.executor.resource.gpu.amount": "1", "spark.task.resource.gpu.amount": "1"}
    command, environment = entrypoint_request(info, get_context().load_stack().artifact_store)
    environment["AWS_SECRET_ACCESS_KEY"] = "s3cr3t"  # as a remote artifact store's credentials would arrive
    argv = operator.command(info, command, "/store/code/abc.zip", "/spark/bin/spark-submit")
    assert argv[:9] == ["/spark/bin/spark-submit", "--master", "spark://spark-master.example:7077", "--deploy-mode",
                        "client", "--name", "conveyor-0123456789abcdef-1", "--py-files", "/store/code/abc.zip"]
    confs = [argv[i + 1] for i, a in enumerate(argv) if a == "--conf"]
    assert confs == sorted(confs)  # deterministic
    assert "spark.executor.memory=2048m" in confs  # the step's resources beat the operator's conf
    assert "spark.eventLog.enabled=true" in confs
    assert "spark.pyspark.driver.python=/opt/venv/bin/python" in confs
    assert "spark.pyspark.python=/opt/worker/bin/python" in confs
    tail = argv[argv.index("--packages"):]
    assert tail[2].endswith("step_operators/spark/driver.py")
    assert tail[3:] == ["--job", "/tmp/attempt/job.json", "--step_name", "noop", "--step_run_id",
                        "0123456789abcdef0123"]
    assert not any("s3cr3t" in a or "CONVEYOR_RUN_ID" in a for a in argv)  # the environment is never on argv
    env = operator.environment(info, environment, "/spark")
    assert env["AWS_SECRET_ACCESS_KEY"] == "s3cr3t" and env["CONVEYOR_RUN_ID"] == "r1"
    assert env["OMP_NUM_THREADS"] == "2" and env["PYSPARK_PYTHON"] == "/opt/worker/bin/python"
    assert env["SPARK_HOME"] == "/spark" and env["CONVEYOR_SPARK_MASTER"] == "spark://spark-master.example:7077"

    # explicit Spark settings beat the ResourceSettings mapping; num_executors sizes a standalone app by cores.max
    _, info = _info("sp", {"resources": {"cpu_count": 4, "memory": "8GB"},
                           "step_operator.spark": {"executor_cores": 2, "executor_memory": "1.5GiB", "num_executors": 3,
                                                   "driver_memory": "1g", "conf": {"spark.executor.cores": "1"}}})
    props = operator.properties(info)
    assert props["spark.executor.memory"] == "1536m" and props["spark.driver.memory"] == "1g"
    assert props["spark.executor.instances"] == "3" and props["spark.cores.max"] == "6"
    assert props["spark.executor.cores"] == "1"  # the step's own conf wins over everything

    step_operator("k8s", "spark", master="k8s://https://kube.example:6443")
    k8s, info = _info("k8s", {"step_operator.spark": {"num_executors": 2}})
    props = k8s.properties(info)
    assert props["spark.executor.instances"] == "2" and "spark.cores.max" not in props
    assert "spark.executor.cores" not in props


def test_a_second_submit_of_the_same_attempt_reattaches_and_a_fresh_operator_follows_it(step_operator,
                                                                                          tmp_path: Path) -> None:
    step_operator("loc1", "spark", master="local[1]", conf={"spark.driver.extraJavaOptions": "-XX:+UseSerialGC"})
    # an id of its own: a job of another test (run at the same time elsewhere) must not be the one re-attached to
    operator, info = _info("loc1", step_run_id=uuid.uuid4().hex[:20])
    attempt = tmp_path / "attempt"
    attempt.mkdir()
    info = type(info)(**{**info.__dict__, "attempt_uri": str(attempt), "job_uri": str(attempt / "job.json")})
    (attempt / "job.json").write_text('{"source": {}}')  # no code archive; the entrypoint will refuse the spec
    # The step's Python waits (in a sitecustomize) until the test lets it go, so the second submit finds the first
    # still running however slowly the machine runs: without it, a fast failure could end the job first.
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "sitecustomize.py").write_text(
        f"import os, time\nwhile not os.path.exists({str(gate / 'go')!r}):\n    time.sleep(0.05)\n")
    command, environment = entrypoint_request(info, get_context().load_stack().artifact_store)
    environment["PYTHONPATH"] = str(gate)
    first = operator.submit(info, command, environment)
    fresh = get_context().load_stack().step_operator("loc1")  # a restarted orchestrator
    again = fresh.submit(info, command, environment)
    try:
        assert first.data["reattached"] is False and again.data["reattached"] is True
        assert again.data["pid"] == first.data["pid"] == first.data["pgid"]
        assert len(pids_with_marker(f"--name {info.job_name} ")) >= 1
        assert fresh.get_status(again).state == "running"
        (gate / "go").touch()
        deadline = time.monotonic() + 60
        while not (report := operator.get_status(first)).terminal and time.monotonic() < deadline:
            operator.wait_for_change(first, 0.2)
        assert report.state == "failed" and report.exit_code == 2, report  # exit 2: the job spec is unusable
        assert fresh.get_status(again).state == "completed"  # by pid: it has ended; result.json decides
        assert "cannot run step noop" in "".join(fresh.logs(again))
    finally:
        operator.cancel(first)
    assert pids_with_marker(f"--name {info.job_name} ") == []


def test_local_master_and_bad_sizes_are_refused_clearly(step_operator) -> None:
    step_operator("loc", "spark", master="local[2]")
    operator, info = _info("loc", {"resources": {"cpu_count": 3}})
    with pytest.raises(ResourceUnavailableError, match=r"cpu_count=3 but master local\[2\] runs 2 task thread"):
        operator.check_resources(info)
    operator, info = _info("loc", {"resources": {"gpu_count": 1}})
    with pytest.raises(ResourceUnavailableError, match="schedules no GPUs"):
        operator.check_resources(info)
    with pytest.raises(ConfigError, match="executor_memory 'lots'"):
        _info("loc", {"step_operator.spark": {"executor_memory": "lots"}})
    with pytest.raises(ConfigError, match="Valid fields of SparkStepOperatorSettings"):
        _info("loc", {"step_operator.spark": {"executor_core": 2}})


def test_cluster_mode_on_a_standalone_master_is_refused_with_the_reason(conveyor_cli) -> None:
    bad = conveyor_cli("step-operator", "register", "sp", "--flavor=spark", "--master=spark://127.0.0.1:7077",
                       "--deploy_mode=cluster", check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "Spark cannot run Python applications in cluster mode there" in bad.stderr
    assert "Use deploy_mode 'client'" in bad.stderr
    bad = conveyor_cli("step-operator", "register", "sp", "--flavor=spark", "--master=yarn", check=False)
    assert bad.returncode == 1 and "give spark://host:port" in bad.stderr


def test_the_cli_registers_a_spark_step_operator(conveyor_cli) -> None:
    assert "spark" in conveyor_cli("step-operator", "flavor", "list").stdout
    out = conveyor_cli("step-operator", "register", "sp", "--flavor=spark", "--master=spark://10.0.0.5:7077",
                       "--master_webui=http://10.0.0.5:8080", "--pending_timeout=5m").stdout
    assert "Registered step operator 'sp'" in out
    described = conveyor_cli("step-operator", "describe", "sp").stdout
    assert "flavor: spark (builtin)" in described and "spark://10.0.0.5:7077" in described
    conveyor_cli("stack", "update", "default", "-s", "sp")
    record = get_context().store.get_component("step_operator", "sp")
    assert record["config"] == {"master": "spark://10.0.0.5:7077", "master_webui": "http://10.0.0.5:8080",
                                "pending_timeout": 300.0}


def test_importing_conveyor_and_the_flavor_does_not_import_pyspark() -> None:
    code = ("import sys, conveyor, conveyor.step_operators.spark, conveyor.step_operators.spark.flavor\n"
            "import conveyor.step_operators.spark.operator\n"
            "from conveyor.stack.registry import BUILTIN_FLAVORS\n"
            "assert 'spark' in BUILTIN_FLAVORS[next(iter(k for k in BUILTIN_FLAVORS if k.value == 'step_operator'))]\n"
            "assert 'pyspark' not in sys.modules and 'py4j' not in sys.modules, 'pyspark was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_driver_file_keeps_its_folder_off_sys_path(tmp_path: Path) -> None:
    """spark-submit runs driver.py as a script; its folder holds operator.py, which must not shadow `operator`."""
    from conveyor.step_operators.spark.operator import DRIVER_FILE

    header = Path(DRIVER_FILE).read_text().split("def main")[0]
    # whether the script's own folder (which holds operator.py next to the real driver) is importable from
    probe = "import os, sys\nprint(os.path.dirname(os.path.abspath(__file__)) in [os.path.abspath(p) for p in sys.path])\n"
    (tmp_path / "control.py").write_text(probe)
    (tmp_path / "driver.py").write_text(header + probe)
    control = subprocess.run([sys.executable, str(tmp_path / "control.py")], capture_output=True, text=True, timeout=60)
    assert control.stdout == "True\n", control  # Python puts a script's folder first on sys.path
    fixed = subprocess.run([sys.executable, str(tmp_path / "driver.py")], capture_output=True, text=True, timeout=60)
    assert fixed.stdout == "False\n", fixed
    # and the real file runs the entrypoint
    out = subprocess.run([sys.executable, DRIVER_FILE, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--job" in out.stdout, out.stderr
