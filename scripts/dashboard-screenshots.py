#!/usr/bin/env python3
"""Regenerate the screenshots of docs/dashboard.md: run a demo, serve it with `conveyor dashboard`, photograph it.

    .venv/bin/python scripts/dashboard-screenshots.py            # writes docs/img/dashboard/*.png
    .venv/bin/python scripts/dashboard-screenshots.py --out /tmp/shots --keep

The demo runs in a throw-away project (nothing is written to the repository but the PNGs): the quickstart
(examples/quickstart: three steps in-process, `train` on the `local` step operator) twice, the second run taking
every step from the cache, then a small pipeline whose `local` step fails once and is retried, so the timeline shows
two attempts. The pages are photographed in Debian's headless `chromium` driven by Playwright (both installed for
the tests: scripts/install-system-deps.sh and the `dev` extra); no browser is downloaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart" / "run.py"
CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
VIEWPORT = {"width": 1280, "height": 860}
#: the docs keep each image small; above this the script says so (crop the page or lower the viewport)
MAX_BYTES = 300_000

RETRIED = '''
from pathlib import Path

from conveyor import pipeline, step

TRIED = "{tried}"  # a file the first attempt leaves behind

@step
def fetch() -> list[int]:
    return list(range(10))


@step(step_operator="local", retry={"max_retries": 1})
def flaky_sum(numbers: list[int]) -> int:
    tried = Path(TRIED)
    if not tried.exists():
        tried.write_text("1")
        raise ConnectionError("the feature store timed out (the first attempt fails on purpose)")
    print(f"summing {len(numbers)} numbers", flush=True)
    return sum(numbers)


@step
def report(total: int) -> str:
    return f"total: {total}"


@pipeline(enable_cache=False)
def retried():
    report(flaky_sum(fetch()))


if __name__ == "__main__":
    retried()
'''


def _run(cmd: list[str], project: Path) -> None:
    env = {**os.environ, "CONVEYOR_PROJECT_DIR": str(project), "CONVEYOR_QUIET": "1"}
    proc = subprocess.run(cmd, check=False, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(project: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`conveyor dashboard` for the demo project, once it answers."""
    port = _free_port()
    exe = Path(sys.executable).with_name("conveyor")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(exe), "dashboard", "--port", str(port)], cwd=project, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "CONVEYOR_PROJECT_DIR": str(project)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"conveyor dashboard exited {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url + "/", timeout=5):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    sys.exit(f"conveyor dashboard did not answer {url} within 120 s:\n{log_path.read_text(errors='replace')}")


def _photograph(url: str, run_id: str, retried_id: str, out: Path) -> list[Path]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("Playwright is not installed: pip install -e '.[dev]' (or pip install playwright)")
    chromium = next((p for p in CHROMIUM_PATHS if p and os.access(p, os.X_OK)), None)
    if chromium is None:
        sys.exit("no chromium found: sudo bash scripts/install-system-deps.sh (Debian's chromium package)")
    shots = [("runs.png", "/", "table#runs"),
             ("run.png", f"/runs/{run_id}", "#timeline"),
             ("run-retried.png", f"/runs/{retried_id}", "#timeline"),
             ("step.png", f"/runs/{run_id}/steps/train", "pre#logs")]
    written = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(60_000)
        for name, path, ready in shots:
            page.goto(url + path)
            page.locator(ready).first.wait_for()
            page.wait_for_load_state("networkidle")
            target = out / name
            # at most the viewport (what a reader sees first, and a small file), no empty space below a short page
            height = min(page.evaluate("document.documentElement.scrollHeight"), VIEWPORT["height"])
            page.screenshot(path=str(target), clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height})
            written.append(target)
        browser.close()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "dashboard", help="where the PNGs go")
    parser.add_argument("--keep", action="store_true", help="keep the demo project (its path is printed)")
    args = parser.parse_args()
    project = Path(tempfile.mkdtemp(prefix="conveyor-screenshots-"))
    server: subprocess.Popen[bytes] | None = None
    try:
        os.environ["CONVEYOR_PROJECT_DIR"] = str(project)
        from conveyor import Client

        _run([sys.executable, str(QUICKSTART)], project)
        run_id = Client().list_pipeline_runs("digits_pipeline")[0].id
        _run([sys.executable, str(QUICKSTART)], project)  # again: every step from the cache
        (project / "retried.py").write_text(textwrap.dedent(RETRIED).replace("{tried}", str(project / "tried")))
        _run([sys.executable, "retried.py"], project)
        retried_id = Client().list_pipeline_runs("retried")[0].id
        server, url = _serve(project, project / "dashboard.log")
        args.out.mkdir(parents=True, exist_ok=True)
        for path in _photograph(url, run_id, retried_id, args.out):
            size = path.stat().st_size
            note = f"  (over {MAX_BYTES // 1000} KB: keep the docs light)" if size > MAX_BYTES else ""
            print(f"{path}  {size // 1000} KB{note}")
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        if args.keep:
            print(f"demo project kept in {project}")
        else:
            shutil.rmtree(project, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
