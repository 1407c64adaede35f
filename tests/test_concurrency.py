"""Many orchestrating processes at once against one store; a wide fan-out through the `local` step operator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from testkit import add_step_operator

from conveyor import Client

PROCESSES, SHARED, UNIQUE = 8, 12, 11  # 1 + 12 + 1 + 11 = 25 steps per run

MANY = textwrap.dedent('''
    import sys
    from conveyor import pipeline, step

    @step
    def seed(k: int) -> int:
        return k

    @step
    def add(x: int, i: int) -> int:
        return x + i

    @pipeline(enable_cache=True)
    def many(proc: int):
        x = seed(1, id="shared_seed")  # the same in every process: cached across them
        for i in range({shared}):
            x = add(x, i, id=f"shared_{{i}}")
        y = seed(proc + 100, id="own_seed")  # this process's own
        for i in range({unique}):
            y = add(y, i, id=f"own_{{i}}")

    if __name__ == "__main__":
        many(int(sys.argv[1]))
''').format(shared=SHARED, unique=UNIQUE)


def expected_outputs(proc: int) -> dict[str, int]:
    out, x, y = {"shared_seed": 1, "own_seed": proc + 100}, 1, proc + 100
    for i in range(SHARED):
        x += i
        out[f"shared_{i}"] = x
    for i in range(UNIQUE):
        y += i
        out[f"own_{i}"] = y
    return out


def _run_all_at_once(project: Path, env: dict[str, str]) -> None:
    (project / "many.py").write_text(MANY)
    procs = [subprocess.Popen([sys.executable, "many.py", str(i)], cwd=project, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "CONVEYOR_QUIET": "1", **env})
             for i in range(PROCESSES)]
    errors = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for code, err in errors:
        assert "database is locked" not in err, err
        assert code == 0, err


def _check_every_run_recorded() -> None:
    client = Client()
    runs = client.list_pipeline_runs(size=None)
    assert len(runs) == PROCESSES
    seen_procs = set()
    cached = 0
    for summary in runs:
        run = client.get_pipeline_run(summary.id)
        assert run.status == "completed" and len(run.steps) == 25
        proc = run.steps["own_seed"].outputs["output"].load() - 100
        seen_procs.add(proc)
        for name, value in expected_outputs(proc).items():
            step_run = run.steps[name]
            assert step_run.status in ("completed", "cached"), (name, step_run.status)
            assert step_run.outputs["output"].load() == value, (summary.name, name)
            cached += step_run.status == "cached"
        assert all(run.steps[f"own_{i}"].status == "completed" for i in range(UNIQUE)), "another run's output reused"
    assert seen_procs == set(range(PROCESSES))
    assert cached > 0, "no process reused another's cached outputs"


def test_eight_processes_at_once_against_one_sqlite_store(project: Path) -> None:
    _run_all_at_once(project, {})
    _check_every_run_recorded()


@pytest.mark.postgres
def test_eight_processes_at_once_against_one_postgresql_store(project: Path, postgres_db_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from conveyor.context import reset_contexts

    monkeypatch.setenv("CONVEYOR_STORE_URL", postgres_db_url)
    reset_contexts()
    _run_all_at_once(project, {"CONVEYOR_STORE_URL": postgres_db_url})
    _check_every_run_recorded()


FAN_OUT = textwrap.dedent('''
    import json, re, sys
    from conveyor import pipeline, step

    @step
    def square(i: int) -> int:
        return i * i

    @step(step_operator="wide")
    def square_remote(i: int) -> int:
        return i * i

    @pipeline(enable_cache=False)
    def fan_out(n: int):
        for i in range(n):
            square_remote(i, id=f"sq_{{i}}")

    if __name__ == "__main__":
        fan_out(int(sys.argv[1]))
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the (large) pytest process we were forked from
        status = open("/proc/self/status").read()
        peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
        print(json.dumps({{"peak_mib": peak_kib / 1024}}))
''')


def test_a_fan_out_of_1000_steps_through_the_local_step_operator_keeps_the_orchestrator_small(
        project: Path, conveyor_cli) -> None:
    n = 1000
    add_step_operator("wide", "local")
    conveyor_cli("orchestrator", "register", "wide_orch", "--flavor=local", "--max_parallelism=32")
    conveyor_cli("stack", "update", "default", "--orchestrator=wide_orch")
    (project / "fan_out.py").write_text(FAN_OUT.format())
    proc = subprocess.run([sys.executable, "fan_out.py", str(n)], cwd=project, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "CONVEYOR_QUIET": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"]
    run = Client().get_pipeline_run(Client().list_pipeline_runs()[0].id)
    assert run.status == "completed" and len(run.steps) == n
    assert {s.outputs["output"].load() for s in run.steps.values()} == {i * i for i in range(n)}
    assert peak < 256, f"the orchestrator grew to {peak:.0f} MiB for {n} steps"
    events = sorted([(s.start_time, 1) for s in run.steps.values()] + [(s.end_time, -1) for s in run.steps.values()],
                    key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    running = most = 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    print(f"\n{n}-step fan-out through the local step operator: orchestrator peak RSS {peak:.0f} MiB, "
          f"at most {most} steps at once")
    assert 1 < most <= 32, f"{most} steps overlapped; max_parallelism is 32"
