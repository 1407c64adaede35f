"""The Spark step operator: run the step's entrypoint through spark-submit (the step is the application's driver),
follow spark-submit's process, stream its output, and kill the application on cancel.

Client mode (the default, and the only mode Spark allows Python applications on a standalone master): spark-submit
starts the driver JVM on this machine, which starts the step's Python process; the executors run on the cluster's
workers. spark-submit leads its own process group, so killing the group ends the driver, and a standalone master
then removes the application and its executors. The standalone master's web UI (`GET /json/`) tells which workers
exist (to refuse a request none can hold before submitting) and which applications still run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

from conveyor.config.units import format_bytes
from conveyor.exceptions import MEMORY_ADVICE, ResourceUnavailableError
from conveyor.step_operators.base import BaseStepOperator
from conveyor.step_operators.info import StatusReport, StepRunInfo, Submission
from conveyor.step_operators.spark import MASTER_ENV
from conveyor.step_operators.spark.flavor import SparkStepOperatorConfig, SparkStepOperatorSettings, mib
from conveyor.utils.procs import alive, kill_group, pids_with_marker, start_ticks

log = logging.getLogger(__name__)

#: properties every step gets unless the operator's or the step's `conf` says otherwise
DEFAULT_CONF = {"spark.ui.showConsoleProgress": "false"}
#: the step environment a Kubernetes cluster-mode driver may receive on the command line (nothing secret)
NON_SECRET_ENV = frozenset({"CONVEYOR_RUN_ID", "CONVEYOR_STEP_RUN_ID", "CONVEYOR_STEP_NAME", "CONVEYOR_STORAGE_OPTIONS"})
MASTER_TTL_S = 30.0
DRIVER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "driver.py")
CONVEYOR_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_SIZE_FACTORS = {"": 2**20, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}


def size_bytes(value: str) -> int | None:
    """Bytes of a Spark memory property ("2g", "512m"; no suffix means MiB, as for spark.executor.memory), or None
    for a value we cannot read (Spark then judges it itself)."""
    text = value.strip().lower().removesuffix("b")
    unit = text[-1] if text and text[-1] in "kmgtp" else ""
    number = text[: len(text) - len(unit)]
    return int(number) * _SIZE_FACTORS[unit] if number.isdigit() else None


def _count(value: str | None) -> int:
    """A Spark count property as a whole number (0 when unset or unreadable: Spark judges it itself)."""
    try:
        return math.ceil(float(value or 0))
    except ValueError:
        return 0


@dataclass
class _Job:
    info: StepRunInfo
    log_path: str
    process: "subprocess.Popen[bytes] | None" = None
    pid: int | None = None
    cancelled: bool = False


class SparkStepOperator(BaseStepOperator):
    streams_logs: ClassVar[bool] = True
    stores_logs: ClassVar[bool] = True
    #: spark-submit ships the code to the executors (--py-files): the content-hashed archive is what it ships
    needs_code_archive: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._master: tuple[float, dict[str, Any] | None] | None = None

    @property
    def config(self) -> SparkStepOperatorConfig:
        return self._config  # type: ignore[return-value]

    @staticmethod
    def _settings(info: StepRunInfo) -> SparkStepOperatorSettings:
        return info.config.operator_settings or SparkStepOperatorSettings()  # type: ignore[return-value]

    # -- where things are -------------------------------------------------------------------------
    @property
    def standalone(self) -> bool:
        return self.config.master.startswith("spark://")

    @property
    def local_mode(self) -> bool:
        return self.config.master.startswith("local")

    def spark_home(self) -> str:
        """`spark_home`, or the Spark distribution inside the pyspark package (found without importing pyspark)."""
        if self.config.spark_home:
            return os.path.expanduser(self.config.spark_home)
        import importlib.util

        spec = importlib.util.find_spec("pyspark")
        if spec is None or not spec.submodule_search_locations:
            raise ResourceUnavailableError(
                "the spark step operator needs spark-submit: install pyspark (pip install 'conveyor[spark]') or set "
                "spark_home (conveyor step-operator update NAME --spark_home=/opt/spark)")
        return list(spec.submodule_search_locations)[0]

    def spark_submit(self) -> str:
        path = os.path.join(self.spark_home(), "bin", "spark-submit")
        if not os.path.exists(path):
            raise ResourceUnavailableError(f"no spark-submit at {path}: is spark_home a Spark installation?")
        return path

    def webui(self) -> str | None:
        """The standalone master's web UI (its JSON status), or None (not standalone, or turned off)."""
        if not self.standalone or self.config.master_webui == "none":
            return None
        if self.config.master_webui:
            return self.config.master_webui
        first = self.config.master.removeprefix("spark://").split(",")[0]  # an HA master list: the first one
        host = urllib.parse.urlsplit(f"spark://{first}").hostname or "127.0.0.1"
        return f"http://{host}:8080"

    def master_state(self, fresh: bool = False, webui: str | None = None) -> dict[str, Any] | None:
        """The master's `/json/` (workers, active and completed applications), or None if it cannot be read."""
        url = webui or self.webui()
        if url is None:
            return None
        if not fresh and webui is None and self._master and time.monotonic() - self._master[0] < MASTER_TTL_S:
            return self._master[1]
        try:
            with urllib.request.urlopen(f"{url}/json/", timeout=10) as resp:  # noqa: S310 - the configured master
                state: dict[str, Any] | None = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError) as err:
            log.warning("cannot read the Spark master's status at %s/json/: %s", url, err)
            state = None
        if webui is None:
            self._master = (time.monotonic(), state)
        return state

    # -- what is submitted ------------------------------------------------------------------------
    def sizes(self, info: StepRunInfo) -> dict[str, str]:
        """ResourceSettings and the step's Spark settings as Spark properties (settings win; docs: spark.md)."""
        r = info.config.resource_settings
        s = self._settings(info)
        out: dict[str, str] = {}
        cores = s.executor_cores or (math.ceil(r.cpu_count) if r.cpu_count is not None else None)
        from_resources = mib(r.memory_bytes) if r.memory_bytes is not None else None  # "512MB" is decimal: 489m
        memory = s.executor_memory or from_resources
        driver_memory = s.driver_memory or from_resources
        if s.num_executors is not None and self.standalone and cores is None:
            cores = 1  # standalone sizes an app by its total cores: N executors need a known size each
        if cores is not None:
            out["spark.executor.cores"] = str(cores)
            out["spark.driver.cores"] = str(math.ceil(r.cpu_count) if r.cpu_count is not None else cores)
        if memory is not None:
            out["spark.executor.memory"] = memory
        if driver_memory is not None:
            out["spark.driver.memory"] = driver_memory
        if s.num_executors is not None:
            out["spark.executor.instances"] = str(s.num_executors)
            if self.standalone and cores is not None:
                out["spark.cores.max"] = str(s.num_executors * cores)
        if r.gpu_count:
            out["spark.executor.resource.gpu.amount"] = str(r.gpu_count)
            out["spark.task.resource.gpu.amount"] = "1"
        return out

    def interpreters(self) -> tuple[str, str]:
        """(driver, executors) Python."""
        driver = self.config.python or sys.executable
        return driver, self.config.executor_python or driver

    def properties(self, info: StepRunInfo) -> dict[str, str]:
        """Every --conf of the step, lowest precedence first: defaults, the operator's conf, sizes, the step's conf."""
        driver, executors = self.interpreters()
        props = {**DEFAULT_CONF, "spark.pyspark.driver.python": driver, "spark.pyspark.python": executors,
                 **self.config.conf, **self.sizes(info), **self._settings(info).conf}
        if self.config.deploy_mode == "cluster":  # Kubernetes: a deterministic driver pod name, to kill it by
            props.setdefault("spark.kubernetes.driver.pod.name", info.job_name)
        return props

    def command(self, info: StepRunInfo, entrypoint_command: list[str], py_files: str | None,
                spark_submit: str) -> list[str]:
        """spark-submit's argv: options, the driver file, then the entrypoint's own arguments (after the module)."""
        args = [spark_submit, "--master", self.config.master, "--deploy-mode", self.config.deploy_mode,
                "--name", info.job_name]
        if py_files:
            args += ["--py-files", py_files]
        for key, value in sorted(self.properties(info).items()):
            args += ["--conf", f"{key}={value}"]
        module = entrypoint_command.index("-m") + 1 if "-m" in entrypoint_command else 0
        return [*args, *self.config.submit_args, DRIVER_FILE, *entrypoint_command[module + 1:]]

    def environment(self, info: StepRunInfo, environment: dict[str, str], spark_home: str) -> dict[str, str]:
        """spark-submit's environment: ours, the step's (credentials travel here, never on the command line)."""
        r = info.config.resource_settings
        driver, executors = self.interpreters()
        env = {**os.environ, **environment, "SPARK_HOME": spark_home, "PYSPARK_DRIVER_PYTHON": driver,
               "PYSPARK_PYTHON": executors, "PYTHONUNBUFFERED": "1", MASTER_ENV: self.config.master}
        if r.cpu_count is not None:  # client mode: the driver runs here, unpinned; its thread pools follow the request
            env.update(dict.fromkeys(THREAD_VARS, str(max(1, math.ceil(r.cpu_count)))))
        return env

    def _cluster_env_conf(self, environment: dict[str, str]) -> dict[str, str]:
        """Kubernetes cluster mode: the driver pod's environment goes through spark-submit's --conf."""
        secret = sorted(k for k in environment if k not in NON_SECRET_ENV)
        if secret:
            raise ValueError(
                f"deploy_mode 'cluster' would put {', '.join(secret)} on spark-submit's command line: give the "
                "driver pod its credentials through conf spark.kubernetes.driver.secretKeyRef.<VAR>=<secret>:<key> "
                "instead, or use deploy_mode 'client'")
        return {f"spark.kubernetes.driverEnv.{k}": v for k, v in environment.items()}

    def _code_archive(self, info: StepRunInfo, environment: dict[str, str]) -> str | None:
        """A local path of the step's code archive, for --py-files (downloaded once per hash from a remote store)."""
        if "://" in info.job_uri:
            from conveyor.artifacts.store import ArtifactStore
            from conveyor.execution.launcher import STORAGE_OPTIONS_ENV

            options = json.loads(environment.get(STORAGE_OPTIONS_ENV) or "{}")
            store = ArtifactStore(info.job_uri.rsplit("/", 1)[0], options or None)
            spec = json.loads(store.read_text(info.job_uri))
        else:
            store = None
            with open(info.job_uri) as fh:
                spec = json.load(fh)
        uri = (spec.get("source") or {}).get("code_archive")
        if not uri or "://" not in uri:
            return uri or None
        from conveyor.artifacts.code_archive import cache_dir

        local = cache_dir() / "spark" / uri.rsplit("/", 1)[-1]
        if not local.exists():
            assert store is not None
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = local.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(_read_archive(store, uri))
            os.replace(tmp, local)
        return str(local)

    # -- checks -----------------------------------------------------------------------------------
    def check_resources(self, info: StepRunInfo) -> None:
        r = info.config.resource_settings
        step = info.pipeline_step_name
        props = {**self.config.conf, **self.sizes(info), **self._settings(info).conf}
        if self.local_mode:
            self._check_local(step, r.cpu_count, r.gpu_count)
        if self.config.deploy_mode == "client" and "spark.driver.memory" in props:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            if (size_bytes(props["spark.driver.memory"]) or 0) > total:
                raise ResourceUnavailableError(
                    f"step {step!r} asks for a driver of {props['spark.driver.memory']} but the driver runs on this "
                    f"machine (client mode), which has {format_bytes(total)}: lower memory (or driver_memory)")
        if not self.standalone or not any(k in props for k in ("spark.executor.cores", "spark.executor.memory",
                                                               "spark.executor.resource.gpu.amount")):
            return
        state = self.master_state()
        if state is None:
            return  # the master's UI is not reachable: Spark itself will wait for resources (documented)
        workers = [w for w in state.get("workers") or [] if w.get("state") == "ALIVE"]
        where = f"the Spark master {self.config.master}"
        if not workers:
            raise ResourceUnavailableError(f"step {step!r}: {where} has no alive worker")
        cores = _count(props.get("spark.executor.cores"))
        memory = size_bytes(props.get("spark.executor.memory", "0")) or 0
        gpus = _count(props.get("spark.executor.resource.gpu.amount"))

        def worker_gpus(w: dict[str, Any]) -> int:
            return len(((w.get("resources") or {}).get("gpu") or {}).get("addresses") or [])

        def fits(w: dict[str, Any]) -> bool:
            return (int(w.get("cores", 0)) >= cores and int(w.get("memory", 0)) * 2**20 >= memory
                    and worker_gpus(w) >= gpus)

        if any(fits(w) for w in workers):
            return
        biggest = {"cores": max(int(w.get("cores", 0)) for w in workers),
                   "memory": max(int(w.get("memory", 0)) for w in workers), "gpus": max(worker_gpus(w) for w in workers)}
        asks = []
        if cores > biggest["cores"]:
            from_cpu = (r.cpu_count is not None and not self._settings(info).executor_cores
                        and props.get("spark.executor.cores") == str(math.ceil(r.cpu_count)))
            what = f"cpu_count={r.cpu_count:g}" if from_cpu else f"executor_cores={cores}"
            asks.append(f"{what} (largest worker: {biggest['cores']} cores)")
        if memory > biggest["memory"] * 2**20:
            asks.append(f"executors of {props['spark.executor.memory']} (largest worker: {biggest['memory']} MiB)")
        if gpus > biggest["gpus"]:
            asks.append(f"gpu_count={gpus} (largest worker: {biggest['gpus']} GPUs)")
        raise ResourceUnavailableError(
            f"step {step!r} asks for {', '.join(asks) or 'this combination of resources'} per executor, more than any "
            f"worker of {where} has: Spark would wait for such executors forever, so it is not submitted; lower the "
            "request")

    def _check_local(self, step: str, cpu_count: float | None, gpu_count: int | None) -> None:
        inside = self.config.master[len("local"):].strip("[]").split(",")[0]  # local, local[N], local[*], local[N,F]
        threads = 1 if inside == "" else (os.cpu_count() or 1) if inside == "*" else int(inside)
        if cpu_count is not None and math.ceil(cpu_count) > threads:
            raise ResourceUnavailableError(
                f"step {step!r} asks for cpu_count={cpu_count:g} but master {self.config.master} runs "
                f"{threads} task thread(s): lower cpu_count or raise N in local[N]")
        if gpu_count:
            raise ResourceUnavailableError(
                f"step {step!r} asks for gpu_count={gpu_count} but master {self.config.master} schedules no GPUs: "
                "use a cluster whose workers offer GPU resources")

    # -- full contract ----------------------------------------------------------------------------
    def _find_running(self, job_name: str) -> int | None:
        """The spark-submit of this attempt still running here (a restarted orchestrator re-attaches to it)."""
        for pid in pids_with_marker(f"--name {job_name} "):
            try:
                if os.getpgid(pid) == pid:  # the group leader: spark-submit itself, not its Python child
                    return pid
            except ProcessLookupError:
                continue
        return None

    def submit(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> Submission:
        from conveyor.execution.logs import process_log_path

        self.check_resources(info)
        log_path = process_log_path(info.attempt_uri, info.job_name)  # the stored log, or a file the launcher stores
        data: dict[str, Any] = {"host": socket.gethostname(), "log_path": log_path, "app_name": info.job_name,
                                "master": self.config.master, "deploy_mode": self.config.deploy_mode,
                                "webui": self.webui(), "step_run_id": info.step_run_id}
        existing = self._find_running(info.job_name)
        if existing is not None:  # never submit an attempt twice
            data.update(pid=existing, pgid=existing, start_ticks=start_ticks(existing), reattached=True)
            with self._lock:
                self._jobs[info.job_name] = _Job(info, log_path, pid=existing)
            return Submission(flavor=self.flavor, job_name=info.job_name, backend_id=str(existing), data=data)
        spark_home = self.spark_home()
        env = self.environment(info, environment, spark_home)
        command = self.command(info, entrypoint_command, self._code_archive(info, environment), self.spark_submit())
        if self.config.deploy_mode == "cluster":
            if "://" not in info.job_uri:
                raise ValueError("deploy_mode 'cluster' runs the driver on the cluster, which cannot read a local "
                                 "artifact store: use a remote one (s3://...) or deploy_mode 'client'")
            extra = [a for k, v in sorted(self._cluster_env_conf(environment).items()) for a in ("--conf", f"{k}={v}")]
            at = command.index(DRIVER_FILE)
            command = [*command[:at], *extra, *command[at:]]
        with open(log_path, "ab") as out:
            out.write(f"$ {shlex.join(command)}\n".encode())
            out.flush()
            # Its own session: spark-submit leads a process group holding the driver JVM and the step's Python,
            # so cancel() ends both at once, and a terminal's Ctrl-C reaches only the orchestrator.
            process = subprocess.Popen(  # noqa: S603 - spark-submit with our own arguments
                command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, cwd=os.getcwd())
        with self._lock:
            self._jobs[info.job_name] = _Job(info, log_path, process=process, pid=process.pid)
        data.update(pid=process.pid, pgid=process.pid, start_ticks=start_ticks(process.pid), reattached=False)
        return Submission(flavor=self.flavor, job_name=info.job_name, backend_id=str(process.pid), data=data)

    def _same_process(self, submission: Submission) -> bool:
        """Whether the receipt's spark-submit still runs here (same host, same pid, same start time)."""
        pid = submission.data.get("pid")
        if pid is None or submission.data.get("host") != socket.gethostname() or not alive(int(pid)):
            return False
        ticks = submission.data.get("start_ticks")
        return ticks is None or start_ticks(int(pid)) == ticks

    def get_status(self, submission: Submission) -> StatusReport:
        job = self._jobs.get(submission.job_name)
        if job is None or job.process is None:
            return self._status_elsewhere(submission, job)
        code = job.process.poll()
        if code is None:
            return StatusReport("running")
        if job.cancelled:
            return StatusReport("cancelled", exit_code=code)
        if code == 0:
            return StatusReport("completed", exit_code=0)
        return self._failure(submission, code)

    def _status_elsewhere(self, submission: Submission, job: _Job | None) -> StatusReport:
        """Followed by pid: another process submitted it (`conveyor run stop`, a re-attach)."""
        if submission.data.get("host") != socket.gethostname():
            return StatusReport("lost", f"spark-submit ran on {submission.data.get('host')}, not on this host")
        if self._same_process(submission):
            return StatusReport("running")
        if job is not None and job.cancelled:
            return StatusReport("cancelled")
        return StatusReport("completed", "spark-submit has ended (its exit code is known only to its parent)")

    def _failure(self, submission: Submission, code: int) -> StatusReport:
        """spark-submit failed before the step wrote a result: say why from the end of its output."""
        tail = self._log_tail(submission.data.get("log_path"))
        if "java.lang.OutOfMemoryError" in tail:
            return StatusReport("failed", f"{MEMORY_ADVICE} (the driver JVM ran out of heap: raise memory or "
                                "driver_memory)", exit_code=code, kind="memory")
        errors = [ln for ln in tail.splitlines() if any(w in ln for w in ("Exception", "Error", "error:"))]
        reason = errors[-1].strip() if errors else (tail.strip().splitlines() or [""])[-1]
        if code < 0:
            return StatusReport("failed", f"spark-submit was killed by signal {-code}", exit_code=128 - code)
        return StatusReport("failed", f"spark-submit exited with code {code}" + (f": {reason}" if reason else ""),
                            exit_code=code)

    @staticmethod
    def _log_tail(path: str | None, size: int = 8192) -> str:
        if not path:
            return ""
        try:
            with open(path, "rb") as fh:
                fh.seek(max(0, os.path.getsize(path) - size))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_for_change(self, submission: Submission, timeout: float) -> bool:
        """Returns as soon as spark-submit exits, so a finished step is noticed at once."""
        job = self._jobs.get(submission.job_name)
        if job is not None and job.process is not None:
            try:
                job.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        else:
            time.sleep(timeout)
        return True

    def find_app(self, submission: Submission) -> dict[str, Any] | None:
        """The step's application on the standalone master (by its deterministic name), newest first; or None."""
        state = self.master_state(fresh=True, webui=submission.data.get("webui"))
        if not state:
            return None
        name = submission.data.get("app_name") or submission.job_name
        apps = [{**a, "active": True} for a in state.get("activeapps") or [] if a.get("name") == name]
        apps += [{**a, "active": False} for a in state.get("completedapps") or [] if a.get("name") == name]
        return max(apps, key=lambda a: a.get("starttime") or 0) if apps else None

    def cancel(self, submission: Submission) -> None:
        job = self._jobs.get(submission.job_name)
        if job is not None:
            job.cancelled = True
        if submission.data.get("deploy_mode") == "cluster":
            self._kill_cluster_driver(submission)
        if job is not None and job.process is not None:
            kill_group(job.process.pid)
            job.process.wait()
        elif self._same_process(submission):
            kill_group(int(submission.data["pgid"]))
        self._wait_app_gone(submission)

    def _wait_app_gone(self, submission: Submission) -> None:
        """Wait (up to stop_timeout) until the master has dropped the step's application and every worker has ended
        its executors: the master marks the application finished first, and the workers kill executors after."""
        if not submission.data.get("webui"):
            return
        deadline = time.monotonic() + self.config.stop_timeout
        app = self.find_app(submission)
        while app is not None and app["active"] and time.monotonic() < deadline:
            time.sleep(0.2)
            app = self.find_app(submission)
        if app is None:
            return  # the step never made a Spark session: no application, no executors
        submission.data["app_id"] = app.get("id")
        while time.monotonic() < deadline:
            if not app["active"] and not self._executors_left(submission, app.get("id")):
                return
            time.sleep(0.2)
            app = self.find_app(submission) or app
        log.warning("Spark application %s (%s) still has executors on %s %.0fs after its driver was killed",
                    submission.data.get("app_name"), app.get("id"), submission.data.get("master"),
                    self.config.stop_timeout)

    def _executors_left(self, submission: Submission, app_id: str | None) -> list[str]:
        """Executors of the application that a worker still runs (each worker's own `/json/`)."""
        state = self.master_state(fresh=True, webui=submission.data.get("webui")) or {}
        left = []
        for worker in state.get("workers") or []:
            url = worker.get("webuiaddress")
            if not url or worker.get("state") != "ALIVE":
                continue
            try:
                with urllib.request.urlopen(f"{url}/json/", timeout=5) as resp:  # noqa: S310 - the master's worker
                    executors = json.load(resp).get("executors") or []
            except (urllib.error.URLError, OSError, ValueError):
                continue  # an unreachable worker: nothing to wait for that we could see
            left += [f"{worker.get('id')}/{e.get('id')}" for e in executors if e.get("appid") == app_id]
        return left

    def _kill_cluster_driver(self, submission: Submission) -> None:
        """Kubernetes cluster mode: the driver runs in a pod; `spark-submit --kill namespace:pod` deletes it."""
        props = {**self.config.conf}
        namespace = props.get("spark.kubernetes.namespace", "default")
        pod = props.get("spark.kubernetes.driver.pod.name", submission.job_name)
        try:
            subprocess.run([self.spark_submit(), "--master", submission.data.get("master") or self.config.master,
                            "--kill", f"{namespace}:{pod}"], capture_output=True, timeout=60, check=False,
                           env={**os.environ, "SPARK_HOME": self.spark_home()})
        except (OSError, subprocess.TimeoutExpired, ResourceUnavailableError) as err:
            log.warning("could not kill the Spark driver pod %s:%s: %s", namespace, pod, err)

    def cleanup(self, submission: Submission) -> None:
        self._jobs.pop(submission.job_name, None)

    def logs(self, submission: Submission, follow: bool = False) -> Iterator[str]:
        """Tail spark-submit's output (driver JVM and the step's Python); with `follow`, until it has ended."""
        from conveyor.utils.tail import tail_file

        path = submission.data.get("log_path")
        if path:
            yield from tail_file(path, follow, lambda: self._finished(submission),
                                 lambda: self.wait_for_change(submission, 0.05))

    def _finished(self, submission: Submission) -> bool:
        job = self._jobs.get(submission.job_name)
        if job is not None and job.process is not None:
            return job.process.poll() is not None
        return not self._same_process(submission)

    def dry_run(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        """The spark-submit command, with machine-specific paths named rather than spelled out."""
        command = self.command(info, entrypoint_command, "<artifact store>/code/<sha256 of the code>.zip",
                               "<spark_home>/bin/spark-submit")
        command = [a.replace(CONVEYOR_DIR, "<conveyor>") for a in command]
        return {"flavor": self.flavor, "job_name": info.job_name, "master": self.config.master,
                "spark_home": self.config.spark_home or "<the pyspark package>", "spark_submit": command,
                "environment": sorted({*environment, "SPARK_HOME", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON",
                                       MASTER_ENV, *(THREAD_VARS if info.resources.cpu_count is not None else ())}),
                "master_webui": self.webui()}


def _read_archive(store: Any, uri: str) -> bytes:
    """The code archive's bytes, checked against the hash in its name."""
    data: bytes = store.read_bytes(uri)
    if hashlib.sha256(data).hexdigest() != uri.rsplit("/", 1)[-1].removesuffix(".zip"):
        raise ValueError(f"code archive {uri} does not match its hash: re-run to upload it again")
    return data
