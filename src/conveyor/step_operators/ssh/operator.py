"""The SSH step operator: ship the job, start it detached on the host, follow it by pid, bring the outputs back.

Remote layout, under `remote_dir` (default `~/.conveyor`):

    store/                    mirror of a local artifact store (same relative paths): job specs, inputs,
                              outputs, result.json, and code/<sha256>.zip (shipped once per hash)
    jobs/<job_name>/          launch.json, env.sh (0600), output.log, pid, state, exitcode, cancelled
    alloc.json, alloc.lock    which launcher holds which CPUs and GPUs (see remote_launch.py)
    code-cache/               the extracted code archives (CONVEYOR_CODE_CACHE on the host)
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import getpass
import json
import math
import os
import posixpath
import re
import shlex
import shutil
import threading
import time
import uuid
from typing import Any, ClassVar, Iterator

from conveyor.config.units import format_bytes
from conveyor.exceptions import MEMORY_ADVICE, InfrastructureError, ResourceUnavailableError
from conveyor.step_operators.base import BaseStepOperator
from conveyor.step_operators.info import StatusReport, StepRunInfo, Submission
from conveyor.step_operators.ssh.flavor import SSHStepOperatorConfig, SSHStepOperatorSettings

LAUNCH_MODULE = "conveyor.step_operators.ssh.remote_launch"
LOG_POLL_S = 0.2
LOG_CHUNK = 4 * 2**20
CANCEL_GRACE_S = 2.0
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SSHUnavailable(InfrastructureError):
    """The host could not be reached (or the connection dropped) just now."""


# --------------------------------------------------------------------------- the connection pool


class _Loop:
    """One asyncio loop in a daemon thread per process; synchronous callers hand it coroutines."""

    _instance: "_Loop | None" = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="conveyor-ssh", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> "_Loop":
        with cls._guard:
            if cls._instance is None or cls._instance.pid != os.getpid():  # not inherited across fork
                cls._instance = cls()
                _CLIENTS.clear()
            return cls._instance

    def call(self, coro: Any, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise


class _Client:
    """One SSH connection to one target, opened on first use and re-opened after it drops."""

    def __init__(self, options: dict[str, Any], label: str) -> None:
        self.options, self.label = options, label
        self.connects = 0
        self._conn: Any = None
        self._sftp: Any = None
        self._lock: asyncio.Lock | None = None

    async def _connection(self) -> Any:
        import asyncssh

        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._sftp = None
                self._conn = await asyncssh.connect(**self.options)
                self.connects += 1
            return self._conn

    async def _sftp_client(self) -> Any:
        conn = await self._connection()
        if self._sftp is None:
            self._sftp = await conn.start_sftp_client()
        return self._sftp

    def _call(self, make: Any, timeout: float) -> Any:
        import asyncssh

        loop = _Loop.get()
        conn = self._conn
        try:
            return loop.call(make(), timeout)
        except asyncssh.SFTPError as err:
            if not isinstance(err, asyncssh.SFTPConnectionLost):
                raise  # e.g. no such file: an answer, not a connection problem
            failure: BaseException = err
        except (Exception, asyncio.CancelledError) as err:  # noqa: BLE001
            # Whatever a cut connection surfaces as (asyncssh errors, OSError, EOF, timeouts, cancelled waiters, and
            # the odd bare exception from deep inside a closing transport) means "not reachable just now".
            failure = err
        if conn is None or self._conn is conn:  # another thread may already have opened a fresh one
            self.drop(abort=False)
        detail = f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
        raise SSHUnavailable(f"ssh {self.label}: {detail}") from failure

    def drop(self, abort: bool = True) -> None:
        """Forget the connection; with `abort`, cut it the hard way (no SSH goodbye), as a network failure would."""
        conn, self._conn, self._sftp = self._conn, None, None
        if conn is not None:
            loop = _Loop.get().loop
            loop.call_soon_threadsafe(conn.abort if abort else conn.close)

    # -- operations -------------------------------------------------------------------------------
    def run(self, command: str, *, input: bytes | None = None, timeout: float = 60) -> tuple[int, bytes, bytes]:
        async def go() -> tuple[int, bytes, bytes]:
            conn = await self._connection()
            result = await conn.run(command, input=input, encoding=None)
            if result.exit_status is None and result.exit_signal is None:
                # the channel closed under the command (connection lost): its output may be cut short
                raise ConnectionResetError("the SSH channel closed before the command finished")
            status = result.exit_status if result.exit_status is not None else 255
            return status, result.stdout or b"", result.stderr or b""

        return self._call(go, timeout)

    def put(self, local: str, remote: str, *, timeout: float = 600) -> None:
        async def go() -> None:
            sftp = await self._sftp_client()
            await sftp.put(local, remote, recurse=os.path.isdir(local))

        self._call(go, timeout)

    def get(self, remote: str, local: str, *, recurse: bool, timeout: float = 600) -> None:
        async def go() -> None:
            sftp = await self._sftp_client()
            await sftp.get(remote, local, recurse=recurse)

        self._call(go, timeout)

    def write(self, remote: str, data: bytes, mode: int, *, timeout: float = 60) -> None:
        """Create `remote` with `mode` from the start (no window where a secret is readable), then fill it."""
        import asyncssh

        async def go() -> None:
            sftp = await self._sftp_client()
            async with sftp.open(remote, "wb", attrs=asyncssh.SFTPAttrs(permissions=mode)) as fh:
                await sftp.chmod(remote, mode)  # an existing file keeps its old mode on open
                await fh.write(data)

        self._call(go, timeout)


_CLIENTS: dict[tuple[Any, ...], _Client] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(config: SSHStepOperatorConfig) -> _Client:
    username = config.username or getpass.getuser()
    key = (config.hostname, config.port, username, config.key_file, config.known_hosts, config.connect_timeout)
    _Loop.get()
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            options: dict[str, Any] = {"host": config.hostname, "port": config.port, "username": username,
                                       "connect_timeout": config.connect_timeout, "keepalive_interval": 15,
                                       "keepalive_count_max": 3}
            if config.key_file:
                options["client_keys"] = [os.path.expanduser(config.key_file)]
                options["agent_path"] = None
            if config.known_hosts:  # else asyncssh's default, ~/.ssh/known_hosts: host keys are always verified
                options["known_hosts"] = os.path.expanduser(config.known_hosts)
            client = _CLIENTS[key] = _Client(options, f"{username}@{config.hostname}:{config.port}")
        return client


def drop_connections() -> int:
    """Cut every pooled SSH connection of this process without a goodbye (tests: a network failure)."""
    with _CLIENTS_LOCK:
        clients = list(_CLIENTS.values())
    for client in clients:
        client.drop(abort=True)
    return len(clients)


@atexit.register
def _close_all() -> None:
    if _Loop._instance is not None and _Loop._instance.pid == os.getpid():
        for client in list(_CLIENTS.values()):
            client.drop(abort=True)


# --------------------------------------------------------------------------- remote shell snippets

q = shlex.quote

#: Sets $alive to 1 while process $pid runs (a zombie counts as ended: PID 1 may reap orphans late).
ALIVE = ('alive=0; if [ -n "$pid" ] && [ -r /proc/$pid/stat ]; then '
         'st=$(sed "s/.*) //" /proc/$pid/stat 2>/dev/null | cut -c1); [ -n "$st" ] && [ "$st" != Z ] && alive=1; fi')
#: Clears $alive when process $pid is not the one the job dir's `start`/`boot` recorded (a pid reused since).
SAME = ('if [ $alive = 1 ] && [ -s start ]; then now=$(sed "s/.*) //" /proc/$pid/stat 2>/dev/null | cut -d" " -f20); '
        '{ [ "$now" = "$(cat start)" ] && [ "$(cat boot 2>/dev/null)" = "$(cat /proc/sys/kernel/random/boot_id)" ]; } '
        '|| alive=0; fi')
#: Succeeds while a non-zombie process of group $pg is left.
GROUP_ALIVE = ("group_alive() { ps -eo pgid=,stat= | awk -v g=\"$pg\" '$1==g && $2 !~ /^Z/ {f=1} END {exit !f}'; }")


def _status_script(job_dir: str) -> str:
    return (f"cd {q(job_dir)} 2>/dev/null || {{ echo nojob=1; exit 0; }}; pid=$(cat pid 2>/dev/null); {ALIVE}; {SAME}; "
            'echo "alive=$alive"; echo "state=$(cat state 2>/dev/null)"; '
            '[ -f exitcode ] && echo "exit=$(cat exitcode)"; [ -f cancelled ] && echo cancelled=1; true')


def _launch_script(job_dir: str, python: str) -> str:
    inner = f"set -a; . ./env.sh; set +a; exec \"$0\" -m {LAUNCH_MODULE} \"$PWD\""
    # Idempotent: a retry after a dropped connection re-reads the pid instead of starting a second copy. The
    # launcher's start time and the boot id are kept beside its pid: a pid reused later is never taken for it.
    record = ('sed "s/.*) //" /proc/$pid/stat 2>/dev/null | cut -d" " -f20 > start; '
              'cat /proc/sys/kernel/random/boot_id > boot')
    return (f"cd {q(job_dir)} && if [ ! -s pid ]; then "
            f"setsid nohup sh -c {q(inner)} {q(python)} </dev/null >>output.log 2>&1 & pid=$!; echo $pid > pid; "
            f"{record}; fi; echo \"$(cat pid) $(cat start 2>/dev/null)\"")


def _cancel_script(job_dir: str, pgid: int | None) -> str:
    wait = 'i=0; while [ $i -lt {n} ] && group_alive; do sleep 0.05; i=$((i+1)); done'.format(n=int(CANCEL_GRACE_S / 0.05))
    pg = str(int(pgid)) if pgid else "$(cat pid 2>/dev/null)"
    # the group's leader alive but another process than the one recorded: the pid was reused, our group is gone
    # (a live group keeps its number from being reused), and nothing is signalled
    reused = f'pid=$pg; {ALIVE}; {SAME.replace("|| alive=0", "|| exit 0")}'
    return (f"cd {q(job_dir)} 2>/dev/null && touch cancelled; pg={pg}; [ -z \"$pg\" ] && exit 0; {reused}; {GROUP_ALIVE}; "
            f"if group_alive; then kill -TERM -- -$pg 2>/dev/null; {wait}; "
            f"if group_alive; then kill -KILL -- -$pg 2>/dev/null; {wait}; fi; fi; true")


def _logs_script(job_dir: str, offset: int) -> str:
    return (f"cd {q(job_dir)} 2>/dev/null || {{ echo 0 1; exit 0; }}; pid=$(cat pid 2>/dev/null); {ALIVE}; {SAME}; "
            f"done=0; {{ [ -f exitcode ] || [ $alive = 0 ]; }} && done=1; echo \"$alive $done\"; "
            f"tail -c +{offset + 1} output.log 2>/dev/null | head -c {LOG_CHUNK}; true")


def env_file_text(environment: dict[str, str]) -> str:
    return "".join(f"{k}={q(v)}\n" for k, v in sorted(environment.items()))


# --------------------------------------------------------------------------- the operator


class SSHStepOperator(BaseStepOperator):
    streams_logs: ClassVar[bool] = True
    stores_logs: ClassVar[bool] = False
    needs_code_archive: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._remote_dir: str | None = None
        self._facts: dict[str, int] | None = None
        self._final: dict[str, StatusReport] = {}
        self._last_contact: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def config(self) -> SSHStepOperatorConfig:
        return self._config  # type: ignore[return-value]

    @property
    def client(self) -> _Client:
        return _client(self.config)

    @property
    def target(self) -> str:
        return f"{self.config.username or getpass.getuser()}@{self.config.hostname}:{self.config.port}"

    # -- remote commands with reconnects ----------------------------------------------------------
    def _run(self, command: str, *, input: bytes | None = None, tries: int = 3, timeout: float = 60) -> tuple[int, bytes, bytes]:
        """Run a shell command on the host; a dropped connection is re-opened and the command retried."""
        for attempt in range(tries):
            try:
                return self.client.run(command, input=input, timeout=timeout)
            except SSHUnavailable:
                if attempt == tries - 1:
                    raise
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def _check(self, command: str, what: str, **kwargs: Any) -> str:
        status, out, err = self._run(command, **kwargs)
        if status != 0:
            raise InfrastructureError(f"{what} on {self.target} failed (exit {status}): "
                                      f"{(err or out).decode(errors='replace').strip()}")
        return out.decode(errors="replace")

    def remote_dir(self) -> str:
        """`remote_dir` with `~` resolved on the host, created if missing."""
        if self._remote_dir is None:
            configured = self.config.remote_dir.rstrip("/") or "/"
            if configured == "~" or configured.startswith("~/"):
                shell_path = '"$HOME"' + q(configured[1:]) if configured != "~" else '"$HOME"'
            else:
                shell_path = q(configured)
            out = self._check(f"mkdir -p {shell_path} && cd {shell_path} && pwd -P", "creating remote_dir")
            self._remote_dir = out.strip().splitlines()[-1]
        return self._remote_dir

    def _job_dir(self, job_name: str) -> str:
        return posixpath.join(self.remote_dir(), "jobs", job_name)

    # -- checks -----------------------------------------------------------------------------------
    def host_facts(self) -> dict[str, int]:
        """The host's usable CPUs and total memory, read once."""
        if self._facts is None:
            out = self._check("nproc; awk '/^MemTotal:/ {print $2}' /proc/meminfo", "reading the host's CPUs and memory")
            cpus, mem_kb = out.split()[:2]
            self._facts = {"cpus": int(cpus), "memory": int(mem_kb) * 1024}
        return self._facts

    def check_resources(self, info: StepRunInfo) -> None:
        r = info.config.resource_settings
        step = info.pipeline_step_name
        host = self.config.hostname
        if r.gpu_count and r.gpu_count > len(self.config.gpu_indices):
            raise ResourceUnavailableError(
                f"step {step!r} asks for gpu_count={r.gpu_count} but step operator {self.name!r} may hand out "
                f"{len(self.config.gpu_indices)} GPU(s) of {host} (gpu_indices={self.config.gpu_indices}): "
                "lower gpu_count or list more GPUs (conveyor step-operator update NAME --gpu_indices=[0,1])")
        if r.cpu_count is None and r.memory_bytes is None:
            return
        facts = self.host_facts()
        if r.cpu_count is not None and math.ceil(r.cpu_count) > facts["cpus"]:
            raise ResourceUnavailableError(
                f"step {step!r} asks for cpu_count={r.cpu_count:g} but {host} lets Conveyor use {facts['cpus']} "
                "CPU(s): lower cpu_count or use a bigger machine")
        if r.memory_bytes is not None and r.memory_bytes > facts["memory"]:
            raise ResourceUnavailableError(
                f"step {step!r} asks for memory={r.memory} but {host} has {format_bytes(facts['memory'])}: "
                "lower it or use a bigger machine")

    # -- what goes where --------------------------------------------------------------------------
    @staticmethod
    def _local_store_root(spec: dict[str, Any]) -> str | None:
        root = spec["artifact_store"]["root"]
        return None if "://" in root else root.rstrip("/")

    def _plan(self, info: StepRunInfo, spec: dict[str, Any], remote_dir: str) -> dict[str, Any]:
        """The rewritten job spec, what to ship and what to bring back (local store), or nothing to move (URL)."""
        root = self._local_store_root(spec)
        if root is None:
            return {"spec": None, "job_uri": info.job_uri, "ship": [], "back": [], "result": None}
        remote_root = posixpath.join(remote_dir, "store")

        def to_remote(uri: str | None) -> str | None:
            if uri is None:
                return None
            if uri == root or uri.startswith(root + "/"):
                return remote_root + uri[len(root):]
            raise ResourceUnavailableError(f"{uri} lies outside the artifact store {root}: the ssh step operator "
                                           "can only ship artifacts of its artifact store")

        new = json.loads(json.dumps(spec))
        new["artifact_store"] = {**spec["artifact_store"], "root": remote_root}
        ship = []  # (local path, remote path): artifacts are immutable, so present remotely = up to date
        code = (spec.get("source") or {}).get("code_archive")
        if code:
            new["source"]["code_archive"] = to_remote(code)
            ship.append((code, new["source"]["code_archive"]))
        for arg, inp in spec.get("inputs", {}).items():
            new["inputs"][arg]["uri"] = to_remote(inp["uri"])
            ship.append((inp["uri"], new["inputs"][arg]["uri"]))
        back = []
        for name, out in spec.get("outputs", {}).items():
            new["outputs"][name]["uri"] = to_remote(out["uri"])
            back.append((new["outputs"][name]["uri"], out["uri"]))
        new["result_uri"] = to_remote(spec["result_uri"])
        new["log_uri"] = to_remote(spec.get("log_uri"))
        # what the step saves with save_artifact() (under its attempt folder) comes back with its outputs; the
        # result names it by its path there, which _bring_back maps to this store
        saved = posixpath.join(posixpath.dirname(spec["result_uri"]), "saved")
        back.append((to_remote(saved), saved))
        return {"spec": new, "job_uri": to_remote(info.job_uri), "ship": ship, "back": back,
                "result": [new["result_uri"], spec["result_uri"]], "roots": [remote_root, root]}

    def _launch_spec(self, info: StepRunInfo, command: list[str], remote_dir: str) -> dict[str, Any]:
        r = info.config.resource_settings
        return {"command": command, "cpus": r.cpu_count, "memory": r.memory_bytes,
                "memory_enforcement": self.config.memory_enforcement, "gpus": r.gpu_count or 0,
                "gpu_indices": list(self.config.gpu_indices), "alloc_dir": remote_dir}

    def _environment(self, info: StepRunInfo, environment: dict[str, str], remote_dir: str) -> dict[str, str]:
        settings: SSHStepOperatorSettings | None = info.config.operator_settings  # type: ignore[assignment]
        env = {"CONVEYOR_CODE_CACHE": posixpath.join(remote_dir, "code-cache"), **environment,
               **(settings.environment if settings is not None else {})}
        bad = [k for k in env if not _ENV_NAME.match(k)]
        if bad:
            raise ValueError(f"environment variable names {bad} are not valid shell names")
        return env

    def _remote_command(self, entrypoint_command: list[str], job_uri: str) -> list[str]:
        command = [self.config.python, *entrypoint_command[1:]]
        command[command.index("--job") + 1] = job_uri
        return command

    # -- full contract ----------------------------------------------------------------------------
    def submit(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> Submission:
        self.check_resources(info)
        remote_dir = self.remote_dir()
        job_dir = self._job_dir(info.job_name)
        if "://" in info.job_uri:
            spec = None
            plan = {"spec": None, "job_uri": info.job_uri, "ship": [], "back": [], "result": None}
        else:
            with open(info.job_uri) as fh:
                spec = json.load(fh)
            plan = self._plan(info, spec, remote_dir)
        env = self._environment(info, environment, remote_dir)
        self._ship(job_dir, plan)
        command = self._remote_command(entrypoint_command, plan["job_uri"])
        launch = self._launch_spec(info, command, remote_dir)
        self.client.write(posixpath.join(job_dir, "env.sh"), env_file_text(env).encode(), 0o600)
        self.client.write(posixpath.join(job_dir, "launch.json"), json.dumps(launch).encode(), 0o644)
        out = self._check(_launch_script(job_dir, self.config.python), "starting the step")
        pid, *start = out.strip().splitlines()[-1].split()
        self._last_contact[info.job_name] = time.monotonic()
        return Submission(flavor=self.flavor, job_name=info.job_name, backend_id=pid, data={
            "host": self.config.hostname, "port": self.config.port, "username": self.config.username,
            "job_dir": job_dir, "pid": int(pid), "pgid": int(pid), "process_start": start[0] if start else None,
            "remote_job": plan["job_uri"],
            "back": plan["back"], "result": plan["result"], "roots": plan.get("roots"), "memory": info.config.resource_settings.memory_bytes})

    def _ship(self, job_dir: str, plan: dict[str, Any]) -> None:
        """Create the job dir; upload the rewritten job spec and whatever artifacts the host lacks, atomically."""
        targets = [remote for _, remote in plan["ship"]]
        dirs = {job_dir} | {posixpath.dirname(t) for t in targets}
        if plan["spec"] is not None:
            dirs.add(posixpath.dirname(plan["job_uri"]))
        probe = " ".join(q(t) for t in targets) or "''"
        mkdirs = " ".join(q(d) for d in sorted(dirs))
        out = self._check(f'mkdir -p {mkdirs} && for p in {probe}; do [ -n "$p" ] && [ ! -e "$p" ] && echo "$p"; done; true',
                          "preparing the job directory")
        missing = set(out.splitlines())
        moves = []
        tag = uuid.uuid4().hex[:8]
        for local, remote in plan["ship"]:
            if remote in missing:
                tmp = f"{remote}.tmp-{tag}"
                self.client.put(local, tmp)
                moves.append((tmp, remote))
        if plan["spec"] is not None:
            tmp = f"{plan['job_uri']}.tmp-{tag}"
            self.client.write(tmp, json.dumps(plan["spec"]).encode(), 0o644)
            moves.append((tmp, plan["job_uri"]))
        if moves:
            # rename, not copy: a half-shipped artifact never shows under its real name; a concurrent step that
            # shipped the same artifact first wins and our copy is dropped
            self._check("; ".join(f"{{ mv -T {q(t)} {q(r)} 2>/dev/null || rm -rf {q(t)}; }}" for t, r in moves),
                        "placing shipped files")

    def _bring_back(self, submission: Submission) -> None:
        """Copy the outputs, then result.json, into the local artifact store (temporary sibling, then rename)."""
        import asyncssh

        tag = uuid.uuid4().hex[:8]
        for remote, local in submission.data.get("back") or []:
            if os.path.exists(local):
                continue
            tmp = f"{os.path.dirname(local)}/.{os.path.basename(local)}.tmp-{tag}"
            os.makedirs(os.path.dirname(local), exist_ok=True)
            try:
                self.client.get(remote, tmp, recurse=True)
                os.rename(tmp, local)
            except (asyncssh.SFTPNoSuchFile, FileNotFoundError):
                pass  # the step did not write it (it failed)
            except OSError:
                if not os.path.exists(local):
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        result = submission.data.get("result")
        if result:
            remote, local = result
            tmp = f"{local}.tmp-{tag}"
            try:
                self.client.get(remote, tmp, recurse=False)
                _map_saved_uris(tmp, submission.data.get("roots"))
                os.replace(tmp, local)
            except (asyncssh.SFTPNoSuchFile, FileNotFoundError):
                pass
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)

    def _remote_state(self, submission: Submission) -> dict[str, str]:
        _, out, _ = self._run(_status_script(submission.data["job_dir"]), tries=2, timeout=30)
        fields = {}
        for line in out.decode(errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key] = value
        if "alive" not in fields and "nojob" not in fields:
            raise SSHUnavailable(f"ssh {self.target}: truncated status answer {out[:200]!r}")
        return fields

    def get_status(self, submission: Submission) -> StatusReport:
        final = self._final.get(submission.job_name)
        if final is not None:
            return final
        if "job_dir" not in submission.data:
            return StatusReport("lost", "the job was never started on the host")
        try:
            fields = self._remote_state(submission)
        except SSHUnavailable as err:
            since = self._last_contact.setdefault(submission.job_name, time.monotonic())
            if time.monotonic() - since > self.config.lost_after:
                return StatusReport("lost", f"{self.target} unreachable for {self.config.lost_after:g}s: {err}")
            return StatusReport("running", f"reconnecting to {self.target}: {err}")
        self._last_contact[submission.job_name] = time.monotonic()
        if fields.get("nojob"):
            return StatusReport("lost", f"job directory {submission.data['job_dir']} is gone from {self.config.hostname}")
        if fields.get("alive") == "1" and "exit" not in fields:
            if fields.get("state") == "queued":
                return StatusReport("queued", f"waiting for free GPUs of gpu_indices {self.config.gpu_indices}")
            if fields.get("state") != "running":
                return StatusReport("queued", f"starting on {self.config.hostname}")
            return StatusReport("running")
        report = self._ended(submission, fields)
        self._final[submission.job_name] = report
        return report

    def _ended(self, submission: Submission, fields: dict[str, str]) -> StatusReport:
        try:
            self._bring_back(submission)
        except SSHUnavailable as err:
            return StatusReport("running", f"bringing the outputs back: {err}")  # not final: try again next poll
        if fields.get("cancelled"):
            return StatusReport("cancelled", f"cancelled on {self.config.hostname}")
        if "exit" not in fields:
            try:
                _, out, _ = self._run(f"tail -c 2000 {q(posixpath.join(submission.data['job_dir'], 'output.log'))}",
                                      tries=2, timeout=30)
                tail = out.decode(errors="replace").strip()
            except SSHUnavailable:
                tail = ""
            return StatusReport("failed", f"the step's process on {self.config.hostname} ended without recording an "
                                "exit code (killed from outside, or the launcher could not start)"
                                + (f"; its output ends with:\n{tail}" if tail else ""))
        try:
            ended = json.loads(fields["exit"])
        except ValueError:
            return StatusReport("failed", f"unreadable exit record on {self.config.hostname}: {fields['exit']!r}")
        code = int(ended.get("code", 1))
        if ended.get("memory"):
            limit = submission.data.get("memory")
            return StatusReport("failed", f"{MEMORY_ADVICE} (the limit was {format_bytes(limit) if limit else '?'}, "
                                f"enforced by {ended.get('mechanism')})", exit_code=137,
                                kind="memory")
        if ended.get("error"):
            return StatusReport("failed", f"the launcher on {self.config.hostname} failed: {ended['error']}",
                                exit_code=code)
        if code == 0:
            return StatusReport("completed", exit_code=0)
        if code < 0:
            return StatusReport("failed", f"the step's process was killed by signal {-code}", exit_code=128 - code)
        return StatusReport("failed", f"the step's process exited with code {code}", exit_code=code)

    def cancel(self, submission: Submission) -> None:
        """SIGTERM the step's process group on the host, SIGKILL after 2 s; idempotent, works from the receipt alone."""
        data = submission.data
        job_dir = data.get("job_dir") or self._job_dir(submission.job_name)
        pgid = data.get("pgid") or data.get("pid")
        for attempt in range(3):
            try:
                self._run(_cancel_script(job_dir, int(pgid) if pgid else None), timeout=30 + CANCEL_GRACE_S * 2)
                return
            except SSHUnavailable:
                if attempt == 2:
                    raise
                time.sleep(0.5)

    def cleanup(self, submission: Submission) -> None:
        """Remove the env file (it may hold secrets); the launcher has freed its CPUs and GPUs when it ended."""
        self._final.pop(submission.job_name, None)
        self._last_contact.pop(submission.job_name, None)
        job_dir = submission.data.get("job_dir")
        if job_dir:
            try:
                self._run(f"rm -f {q(posixpath.join(job_dir, 'env.sh'))}", tries=2, timeout=30)
            except SSHUnavailable:
                pass

    def logs(self, submission: Submission, follow: bool = False) -> Iterator[str]:
        """output.log on the host, read from an offset every 0.2 s (a dropped connection just delays it)."""
        job_dir = submission.data.get("job_dir")
        if not job_dir:
            return
        offset = 0
        pending = b""
        while True:
            try:
                _, out, _ = self.client.run(_logs_script(job_dir, offset), timeout=30)
            except SSHUnavailable:
                if not follow:
                    return
                time.sleep(LOG_POLL_S)
                continue
            header, _, data = out.partition(b"\n")
            if len(header.split()) != 2:  # cut short: ask again
                time.sleep(LOG_POLL_S)
                continue
            done = header.split()[1:2] == [b"1"]
            offset += len(data)
            pending += data
            if b"\n" in pending:
                *lines, pending = pending.split(b"\n")
                yield "".join(line.decode(errors="replace") + "\n" for line in lines)
            if len(data) >= LOG_CHUNK:
                continue
            if done or not follow:
                if pending:
                    yield pending.decode(errors="replace")
                return
            time.sleep(LOG_POLL_S)

    def dry_run(self, info: StepRunInfo, entrypoint_command: list[str], environment: dict[str, str]) -> dict[str, Any]:
        """The request, without connecting: remote paths are shown under the configured (unresolved) remote_dir."""
        remote_dir = self.config.remote_dir.rstrip("/")
        job_dir = posixpath.join(remote_dir, "jobs", info.job_name)
        r = info.config.resource_settings
        local = "://" not in info.attempt_uri
        store = posixpath.join(remote_dir, "store")
        job_uri = info.job_uri
        if local:
            root = info.attempt_uri.split("/runs/", 1)[0]
            job_uri = store + info.job_uri[len(root):]
        settings: SSHStepOperatorSettings | None = info.config.operator_settings  # type: ignore[assignment]
        env_names = sorted({"CONVEYOR_CODE_CACHE", *environment, *(settings.environment if settings else {})})
        return {
            "flavor": self.flavor, "job_name": info.job_name,
            "target": self.target, "remote_dir": remote_dir, "job_dir": job_dir,
            "start": _launch_script(job_dir, self.config.python),
            "launch": self._launch_spec(info, self._remote_command(entrypoint_command, job_uri), remote_dir),
            "environment_file": env_names,
            "ship": (["job.json (paths rewritten to remote_dir/store)", "code archive code/<sha256>.zip (once per hash)",
                      "input artifact directories the host lacks"] if local else []),
            "bring_back": ["output artifact directories", "result.json"] if local else [],
            "limits": {
                "cpu_affinity": None if r.cpu_count is None else f"{max(1, math.ceil(r.cpu_count))} CPU(s)",
                "memory_bytes": r.memory_bytes, "memory_enforcement": self.config.memory_enforcement,
                "gpus": r.gpu_count, "gpu_indices": list(self.config.gpu_indices),
            },
        }


def _map_saved_uris(result_path: str, roots: list[str] | None) -> None:
    """Name what the step saved by where it now is: its path under the host's copy of the store becomes the path
    under this store (the outputs' URIs need no mapping: the launcher records the ones it planned)."""
    if not roots:
        return
    remote_root, local_root = roots
    try:
        with open(result_path, encoding="utf-8") as fh:
            result = json.load(fh)
        saved = (result.get("recorded") or {}).get("saved") or []
    except (OSError, ValueError, AttributeError):
        return  # an unreadable result is the launcher's to report
    changed = False
    for entry in saved:
        uri = entry.get("uri") if isinstance(entry, dict) else None
        if isinstance(uri, str) and (uri == remote_root or uri.startswith(remote_root + "/")):
            entry["uri"] = local_root + uri[len(remote_root):]
            changed = True
    if changed:
        with open(result_path, "w", encoding="utf-8") as fh:
            json.dump(result, fh)
