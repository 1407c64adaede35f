"""Remote side of the `ssh` step operator: allocate CPUs/GPUs, apply limits, run the entrypoint, record its exit.

    python -m conveyor.step_operators.ssh.remote_launch JOB_DIR

Started detached (`setsid nohup`, its own session and process group) by the operator, with the step's environment
already sourced from the 0600 `env.sh`. It reads `JOB_DIR/launch.json`:

    {"command": [...entrypoint argv...], "cpus": int | null, "memory": bytes | null, "memory_enforcement": "auto",
     "gpus": int, "gpu_indices": [0, 1], "alloc_dir": "<remote_dir>"}

and then, in `JOB_DIR`:

1. writes `state` = `queued` and waits until enough GPUs of `gpu_indices` are free. Allocations live in
   `<alloc_dir>/alloc.json` (launcher pid -> its CPUs and GPUs), read and written under an exclusive `flock` on
   `<alloc_dir>/alloc.lock`; entries whose pid is dead (or a zombie) are ignored, so a killed step frees its GPUs;
2. writes `state` = `running` and runs the entrypoint as a child with the `local` flavor's limits
   (`conveyor.step_operators.local.limits`): CPU affinity, a memory cgroup where writable else RLIMIT_AS,
   `OMP_NUM_THREADS` & co., `CUDA_VISIBLE_DEVICES`;
3. writes `exitcode` (JSON: code, whether the memory limit killed it) atomically when the child ends, and frees
   its allocation.

The launcher is its descendants' subreaper (`conveyor.utils.reaper`): a process the step daemonizes (`setsid`,
double fork) is re-parented to it instead of init, so it stays in reach. The operator's cancel sends SIGTERM to the
launcher's process group; the launcher then ends every descendant it has, also those that left the group, before
it exits; and when the step ends on its own, what it left running ends with it.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
QUEUE_POLL_S = 0.25


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    """Running (a zombie counts as dead: PID 1 may reap orphans late)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


@contextmanager
def _allocations(alloc_dir: str) -> Iterator[dict[str, Any]]:
    """The allocation table, locked; dead owners dropped; written back on exit."""
    os.makedirs(alloc_dir, exist_ok=True)
    with open(os.path.join(alloc_dir, "alloc.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = os.path.join(alloc_dir, "alloc.json")
        try:
            with open(path) as fh:
                table = json.load(fh)
        except (OSError, ValueError):
            table = {}
        table = {pid: entry for pid, entry in table.items() if pid.isdigit() and pid_alive(int(pid))}
        yield table
        _write_atomic(path, json.dumps(table, sort_keys=True))


def allocate(alloc_dir: str, cpus: int | None, gpus: int, gpu_indices: list[int]) -> tuple[list[int], list[int]] | None:
    """(CPUs, GPUs) for this launcher, or None while not enough GPUs are free."""
    with _allocations(alloc_dir) as table:
        used_gpus = {g for entry in table.values() for g in entry.get("gpus", [])}
        chosen_gpus: list[int] = []
        if gpus:
            free = [g for g in gpu_indices if g not in used_gpus]
            if len(free) < gpus:
                return None
            chosen_gpus = free[:gpus]
        chosen_cpus: list[int] = []
        if cpus is not None:
            available = sorted(os.sched_getaffinity(0))
            load = {c: 0 for c in available}
            for entry in table.values():
                for c in entry.get("cpus", []):
                    if c in load:
                        load[c] += 1
            chosen_cpus = sorted(sorted(available, key=lambda c: (load[c], c))[:max(1, cpus)])
        table[str(os.getpid())] = {"cpus": chosen_cpus, "gpus": chosen_gpus}
    return chosen_cpus, chosen_gpus


def release(alloc_dir: str) -> None:
    with _allocations(alloc_dir) as table:
        table.pop(str(os.getpid()), None)


def environment(base: dict[str, str], cpus: int | None, gpu_count: int, gpus: list[int]) -> dict[str, str]:
    env = {**base, "PYTHONUNBUFFERED": "1"}
    if cpus is not None:
        for var in THREAD_VARS:
            env[var] = str(max(1, cpus))
    if gpu_count:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # nvidia-smi's numbering, which is what gpu_indices name
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    return env


class _Terminated(BaseException):
    """SIGTERM (the operator's cancel): unwinds the wait so the step's whole tree is ended on the way out."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def run(job_dir: str) -> int:
    from conveyor.step_operators.local.limits import make_preexec, memory_limit
    from conveyor.utils.reaper import become_subreaper, end_descendants

    become_subreaper()
    signal.signal(signal.SIGTERM, _on_sigterm)
    os.chdir(job_dir)
    with open("launch.json") as fh:
        spec = json.load(fh)
    cpus = None if spec.get("cpus") is None else max(1, math.ceil(spec["cpus"]))
    gpu_count = int(spec.get("gpus") or 0)
    alloc_dir = spec["alloc_dir"]
    _write_atomic("state", "queued")
    while (chosen := allocate(alloc_dir, cpus, gpu_count, list(spec.get("gpu_indices") or []))) is None:
        time.sleep(QUEUE_POLL_S)
    cpu_list, gpu_list = chosen
    memory = None
    code: int | None = None
    try:
        if spec.get("memory"):
            memory = memory_limit(int(spec["memory"]), spec.get("memory_enforcement") or "auto")
        env = environment(dict(os.environ), cpus, gpu_count, gpu_list)
        _write_atomic("state", "running")
        proc = subprocess.Popen(spec["command"], env=env, stdin=subprocess.DEVNULL, close_fds=True,
                                preexec_fn=make_preexec(cpu_list, memory) if cpu_list or memory else None)
        code = proc.wait()
        killed = memory is not None and (memory.oom_killed() or (code in (-9, 137) and memory.mechanism == "rlimit"))
        _write_atomic("exitcode", json.dumps({"code": code, "memory": killed,
                                              "mechanism": memory.mechanism if memory else None,
                                              "cpus": cpu_list, "gpus": gpu_list}))
    except _Terminated:
        code = 128 + signal.SIGTERM
    except Exception as err:  # noqa: BLE001 - recorded so the operator can report it
        print(f"conveyor ssh launcher: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        _write_atomic("exitcode", json.dumps({"code": 125, "memory": False, "error": f"{type(err).__name__}: {err}"}))
        code = 125
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        end_descendants()  # cancelled, or the step ended leaving processes behind (daemons included)
        release(alloc_dir)
        if memory is not None:
            memory.remove()
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
