"""What the dashboard tests share: a project whose runs were made by a real pipeline script (in-process steps and one
on the `local` step operator, a hostile log line, parameter and error, metadata), the app over its store, and a
real `conveyor dashboard` process on a free port."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.utils.procs import interrupt

HOSTILE = "<script>alert('pwned')</script>"

#: in-process `load`, `train` on `local`, `evaluate` in-process; `evaluate` fails while the file `fail` exists;
#: `slow` (on `local`, only with WAIT set) prints, waits for the file `go`, prints again
PIPELINE = '''
import os, sys, time
from pathlib import Path
from conveyor import log_metadata, pipeline, step

@step
def load() -> list:
    print("loading " + HOSTILE)
    return [1, 2, 3]

@step(step_operator="local")
def train(data: list, note: str = HOSTILE) -> dict:
    print("training on", data, flush=True)
    log_metadata({"accuracy": 0.9, "comment": HOSTILE})
    return {"w": sum(data) * 0.5}

@step(enable_cache=False)
def evaluate(model: dict) -> float:
    print("evaluating", flush=True)
    if Path("fail").exists():
        raise ValueError("model rejected: " + HOSTILE)
    return model["w"]

@step(enable_cache=False, step_operator="local")
def slow(x: float) -> float:
    print("before the wait", flush=True)
    deadline = time.time() + 120
    while not Path("go").exists() and time.time() < deadline:
        time.sleep(0.05)
    print("after the wait " + os.environ.get("MARK", ""), flush=True)
    return x

@pipeline(enable_cache=False)
def demo():
    m = train(load())
    x = evaluate(m)
    if os.environ.get("WAIT"):
        slow(x)

if __name__ == "__main__":
    try:
        demo()
    except Exception as err:
        print(type(err).__name__, err, file=sys.stderr)
        sys.exit(3)
'''.replace("HOSTILE", repr(HOSTILE))


@dataclass
class Project:
    root: Path
    store_url: str | None

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "CONVEYOR_PROJECT_DIR": str(self.root), "CONVEYOR_QUIET": "1"}
        env.pop("CONVEYOR_STACK", None)
        if self.store_url:
            env["CONVEYOR_STORE_URL"] = self.store_url
        else:
            env.pop("CONVEYOR_STORE_URL", None)
        return env

    def run_script(self, *, fail: bool = False, wait: bool = False, check: bool = True,
                   **env: str) -> subprocess.CompletedProcess[str]:
        (self.root / "pipe.py").write_text(PIPELINE)
        (self.root / "fail").unlink(missing_ok=True)
        if fail:
            (self.root / "fail").write_text("")
        proc = subprocess.run([sys.executable, "pipe.py"], cwd=self.root, capture_output=True, text=True,
                              timeout=180, env={**self.env, **({"WAIT": "1"} if wait else {}), **env})
        if check:
            assert proc.returncode == (3 if fail else 0), proc.stderr
        return proc

    def start_script(self, **env: str) -> subprocess.Popen[str]:
        (self.root / "pipe.py").write_text(PIPELINE)
        (self.root / "fail").unlink(missing_ok=True)
        (self.root / "go").unlink(missing_ok=True)
        return subprocess.Popen([sys.executable, "pipe.py"], cwd=self.root, text=True, env={**self.env, "WAIT": "1",
                                **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def client(self) -> Any:
        from conveyor.client import Client
        from conveyor.context import Context

        return Client(Context(self.root, self.store_url))


def make_project(root: Path, store_url: str | None) -> Project:
    """A project with two runs: one completed, one failed at `evaluate`."""
    root.mkdir(parents=True, exist_ok=True)
    project = Project(root, store_url)
    project.run_script()
    project.run_script(fail=True)
    return project


def app_client(project: Project, token: str | None = None, host: str = "127.0.0.1", **kwargs: Any) -> Any:
    """Starlette's TestClient over the app for `project` (addressed as the loopback server is)."""
    import warnings

    from conveyor.dashboard.app import create_app
    from conveyor.dashboard.security import Guard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's note on httpx versus httpx2
        from starlette.testclient import TestClient
    guard = Guard(host, token)
    return TestClient(create_app(project.client(), guard, **kwargs), base_url="http://127.0.0.1:8237",
                      follow_redirects=False), guard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dashboard_process(project: Project, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`conveyor dashboard ARGS` as a user starts it, on a free port; (the process, the URL it printed). Stopped
    with SIGINT (Ctrl-C) at the end if still running."""
    exe = Path(sys.executable).with_name("conveyor")
    port = free_port()
    proc = subprocess.Popen([str(exe), "dashboard", "--port", str(port), *args], cwd=project.root, env=project.env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not url:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line and proc.poll() is not None:
                raise AssertionError(f"conveyor dashboard exited {proc.returncode}: {proc.stderr.read()}")
            found = re.search(r"(http://\S+)", line)
            url = found.group(1) if found else ""
        assert url, "conveyor dashboard printed no URL"
        base = url.split("?")[0]
        while time.monotonic() < deadline:  # printed before it listens: wait for the port
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        yield proc, url if base != url else base
    finally:
        interrupt(proc, grace=30)


def wait_for(predicate: Any, timeout: float = 120.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
