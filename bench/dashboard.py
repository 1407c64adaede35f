"""The dashboard's rows (issue 16): the run page of a 1,000-step run and the runs list with 10,000 runs (server time:
the app answering a GET, in process, through Starlette's test transport), and the live log latency from a step's
print to a server-sent-events client of a real `conveyor dashboard` process.

    python bench/dashboard.py page PROJECT_DIR N      # N timed GETs of the newest run's page (after a warm one)
    python bench/dashboard.py list PROJECT_DIR N      # N timed GETs of /
    python bench/dashboard.py latency PROJECT_DIR N   # N print → SSE latencies of a live `local` step

Each prints its samples as JSON. `measure_dashboard` prepares the projects (bench/fan_out.py, bench/seed_runs.py)
and runs these as subprocesses; `dashboard_rows` makes the table's rows."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HERE, PYTHON, Row, env_for, project, run, spread  # noqa: E402
from conveyor.utils.procs import interrupt  # noqa: E402

__all__ = ["dashboard_rows", "measure_dashboard"]

LATENCY_SCRIPT = '''
import os
import time
from conveyor import pipeline, step

@step(step_operator="local", enable_cache=False)
def ticker(stop_file: str) -> int:
    # prints until told to stop (the reader may open its stream late on a loaded machine), at most ~10 minutes
    i = 0
    while not os.path.exists(stop_file) and i < 1500:
        print(f"stamp {time.time():.6f}", flush=True)
        time.sleep(0.4)
        i += 1
    return i

@pipeline(enable_cache=False)
def latency(stop_file: str = "stop"):
    ticker(stop_file)

if __name__ == "__main__":
    import sys
    latency(sys.argv[1])
'''


def _app_client() -> Any:
    from conveyor.client import Client
    from conveyor.dashboard.app import create_app
    from conveyor.dashboard.security import Guard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    client = Client()
    return client, TestClient(create_app(client, Guard("127.0.0.1")), base_url="http://127.0.0.1:8237")


def _timed_gets(path: str, n: int) -> list[float]:
    _client, web = _app_client()
    with web:
        assert web.get(path).status_code == 200  # warm: templates compiled, store connected
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            response = web.get(path)
            samples.append(time.perf_counter() - t0)
            assert response.status_code == 200, response.text[:500]
    return samples


def page_samples(n: int) -> list[float]:
    from conveyor.client import Client

    newest = Client().list_pipeline_runs(size=1)[0]
    return _timed_gets(f"/runs/{newest.id}", n)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def latency_samples(n: int, root: Path) -> list[float]:
    """A `local` step prints a time stamp every 0.4 s; a client of a real `conveyor dashboard` reads them over SSE."""
    import httpx

    from conveyor.client import Client

    (root / "latency.py").write_text(LATENCY_SCRIPT)
    stop_file = root / "stop-ticking"
    env = {**os.environ, "CONVEYOR_PROJECT_DIR": str(root), "CONVEYOR_QUIET": "1"}
    pipe = subprocess.Popen([PYTHON, "latency.py", str(stop_file)], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    port = _free_port()
    server = subprocess.Popen([str(Path(PYTHON).with_name("conveyor")), "dashboard", "--port", str(port)], cwd=root,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = Client()
        deadline = time.monotonic() + 120
        run_id = None
        while time.monotonic() < deadline and run_id is None:
            runs = [r for r in client.list_pipeline_runs(size=1) if r.status == "running"]
            run_id = runs[0].id if runs else None
            time.sleep(0.05)
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        samples: list[float] = []
        with httpx.stream("GET", f"http://127.0.0.1:{port}/api/runs/{run_id}/steps/ticker/logs", timeout=60) as s:
            first = True
            for line in s.iter_lines():
                if line.startswith("event: end") or len(samples) >= n:
                    break
                if not line.startswith("data: "):
                    continue
                now = time.time()
                stamps = [float(x) for x in re.findall(r"stamp (\d+\.\d+)", json.loads(line[6:]).get("text", ""))]
                if first:  # what was printed before the stream opened is backlog, not latency
                    first = False
                    continue
                samples += [now - t for t in stamps]
        return samples[:n]
    finally:
        stop_file.touch()  # the step ends on its own; the pipeline then exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            pipe.wait(timeout=60)
        for proc in (server, pipe):
            interrupt(proc, grace=30)


def measure_dashboard(runs: int, say: Callable[[str], None], *, steps: int = 1000,
                      listed: int = 10_000) -> dict[str, Any]:
    """Samples of the three figures, each from its own temporary project; skipped (with why) without the extra."""
    import importlib.util

    missing = [m for m in ("starlette", "uvicorn", "jinja2", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"skipped: pip install 'conveyor[dashboard]' httpx ({', '.join(missing)} missing)"}
    data: dict[str, Any] = {"steps": steps, "listed": listed}
    me = str(Path(__file__).resolve())
    dirs = {k: project() for k in ("page", "list", "latency")}
    try:
        say(f"dashboard: a {steps}-step run, its page {runs} times")
        run([PYTHON, str(HERE / "fan_out.py"), str(steps)], env_for(dirs["page"]))
        data["page"] = json.loads(run([PYTHON, me, "page", str(dirs["page"]), str(runs)],
                                      env_for(dirs["page"])).stdout)
        say(f"dashboard: {listed} runs, the runs list {runs} times")
        run([PYTHON, str(HERE / "seed_runs.py"), str(listed)], env_for(dirs["list"]))
        data["list"] = json.loads(run([PYTHON, me, "list", str(dirs["list"]), str(runs)], env_for(dirs["list"])).stdout)
        say("dashboard: live log latency")
        data["latency"] = json.loads(run([PYTHON, me, "latency", str(dirs["latency"]), str(max(runs, 5))],
                                         env_for(dirs["latency"])).stdout)
    finally:
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
    return data


def dashboard_rows(data: dict[str, Any]) -> list[Row]:
    """The three rows; info rows saying why when skipped."""
    metrics = (("page", f"dashboard: run page of a {data.get('steps', 1000):,}-step run (server time)", 1.0),
               ("list", f"dashboard: runs list with {data.get('listed', 10_000):,} runs", 0.300),
               ("latency", "dashboard: live log latency print → SSE client", 1.0))
    rows = []
    for key, metric, target in metrics:
        samples = data.get(key)
        if not samples:
            rows.append(Row(metric, None, target, None, data.get("skipped", "not measured")))
            continue
        median, low, high = spread(samples)
        note = {"page": "GET /runs/<id>, in process (Starlette's test transport)",
                "list": "GET /, first page of 50, in process",
                "latency": "a `local` step's print to a client of `conveyor dashboard`"}[key]
        rows.append(Row(metric, median, target, None, f"{note}; median of {len(samples)}", "s", low, high))
    return rows


def main(argv: list[str]) -> int:
    mode, root, n = argv[0], Path(argv[1]), int(argv[2])
    os.environ["CONVEYOR_PROJECT_DIR"] = str(root)
    samples = {"page": lambda: page_samples(n), "list": lambda: _timed_gets("/", n),
               "latency": lambda: latency_samples(n, root)}[mode]()
    print(json.dumps(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
