"""The dashboard in a real headless Chromium (tests/fixtures/browser.py), against runs made as users make them: a
script run by a fresh interpreter, steps in-process, on the `local` operator and on the real Slurm cluster the suite
starts; `conveyor dashboard` serves them as a real subprocess. Each test leaves screenshots under its tmp_path.

DOM contract (src/conveyor/dashboard): runs list `table#runs tr[data-run-id]` (`td.status[data-status]`,
`td.duration`); run page `svg#dag g.node[data-step]
[data-status][data-where]`, `#timeline .bar[data-step][data-attempt][data-outcome]`, `#totals`, `form#stop-run`,
`form#resume-run`; step page `#where-card [data-field]`, `#attempts`, `pre#logs`, `input#log-search`; `#flash`."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import run_python, wait_until

from conveyor import Client

MIXED = '''
import os
from pathlib import Path

from conveyor import pipeline, step


@step
def load() -> int:
    return 3


@step(step_operator="local", retry={{"max_retries": 1}})
def square(x: int) -> int:
    tried = Path({tried!r})
    if not tried.exists():  # the first attempt fails, the retry completes: two attempts, two bars
        tried.write_text("1")
        raise RuntimeError("first attempt fails on purpose")
    return x * x


@step(step_operator="hpc")
def on_slurm(x: int) -> int:
    print(f"slurm job {{os.environ.get('SLURM_JOB_ID')}}", flush=True)
    return x + 1


@pipeline(enable_cache=False)
def mixed():
    on_slurm(square(load()))


if __name__ == "__main__":
    mixed()
'''

TICKER = '''
import time
from pathlib import Path

from conveyor import pipeline, step


@step(step_operator={operator!r})
def ticker() -> int:
    gate, i = Path({gate!r}), 0
    while not gate.exists() and i < 600:  # a line every 0.5 s until the test opens the gate (5 minutes at most)
        print(f"tick-{{i}}", flush=True)
        i += 1
        time.sleep(0.5)
    return i


@pipeline(enable_cache=False)
def ticking():
    ticker()


if __name__ == "__main__":
    ticking()
'''

LONG_ON_SLURM = '''
import time

from conveyor import pipeline, step


@step
def prepare() -> int:
    return 1


@step(step_operator="hpc")
def long_job(x: int) -> int:
    print("started", flush=True)
    time.sleep(300)
    return x


@pipeline(enable_cache=False)
def long_run():
    long_job(prepare())


if __name__ == "__main__":
    long_run()
'''

#: markup that runs script if a page ever puts it into the DOM as HTML, in text, attribute and URL contexts
HOSTILE = ('<script>window.__pwned = "script"</script><img src=x onerror="window.__pwned=\'img\';alert(\'img\')">'
           '"><svg onload="window.__pwned=\'svg\';alert(\'svg\')"></svg>\'`&amp;')

HOSTILE_STEPS = f'''
from conveyor import log_metadata, pipeline, step

HOSTILE = {HOSTILE!r}


@step
def shout() -> str:
    print("log line: " + HOSTILE, flush=True)
    log_metadata({{"note": HOSTILE}})
    return HOSTILE


@step
def explode(text: str) -> None:
    raise RuntimeError("error: " + text)


@pipeline(enable_cache=False)
def hostile():
    explode(shout())


if __name__ == "__main__":
    hostile()
'''


def _register_slurm(conveyor_cli: Any, cluster: Any) -> None:
    """The operator `hpc` on the test cluster, in the default stack, as a user registers it."""
    conveyor_cli("step-operator", "register", "hpc", "--flavor=slurm", f"--partition={cluster.partition}",
                 "--poll_interval=0.5")
    conveyor_cli("stack", "update", "default", "-s", "hpc")


def _start_script(project: Path, name: str, source: str) -> subprocess.Popen[bytes]:
    """A user's pipeline script, started in the background by a fresh interpreter (its output to a file)."""
    script = project / f"{name}.py"
    script.write_text(textwrap.dedent(source))
    log = open(project / f"{name}.out", "wb")  # noqa: SIM115 - kept by the child; closed with the process
    env = {**os.environ, "CONVEYOR_PROJECT_DIR": str(project), "CONVEYOR_QUIET": "1"}
    return subprocess.Popen([sys.executable, str(script)], cwd=project, stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Scripts a test starts; killed when it ends, should the test fail before they finish."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _the_run(pipeline_name: str) -> Any:
    runs = Client().list_pipeline_runs(pipeline_name)
    assert len(runs) == 1, runs
    return Client().get_pipeline_run(runs[0].id)


def _running_with_log(pipeline_name: str, step: str, needle: str, timeout: float = 300) -> Any:
    """The run once `step` runs and its log holds `needle` (the step's process is up and printing)."""
    client = Client()
    found: dict[str, Any] = {}

    def printing() -> bool:
        for summary in client.list_pipeline_runs(pipeline_name):
            run = client.get_pipeline_run(summary.id)
            if run.steps[step].status == "running" and needle in run.steps[step].logs():
                found["run"] = run
                return True
        return False

    wait_until(printing, timeout=timeout, what=f"step {step!r} of {pipeline_name!r} running and printing {needle!r}")
    return found["run"]


def _slurm_job_id(step_run: Any) -> str:
    """The Slurm job id the store records for the step's (last) attempt."""
    attempts = [a for a in step_run.attempts if a.backend_job_id]
    job_id = attempts[-1].backend_job_id if attempts else ((step_run.submission or {}).get("data") or {}).get("job_id")
    assert job_id, f"no Slurm job id recorded for {step_run.name}: {step_run.attempts} {step_run.submission}"
    return str(job_id)


def test_the_run_page_of_a_mixed_run_shows_every_step_where_it_ran_and_a_bar_per_attempt(
        slurm_cluster, conveyor_cli, project: Path, tmp_path: Path, dashboard, page, screenshot) -> None:
    from playwright.sync_api import expect

    conveyor_cli("init")
    _register_slurm(conveyor_cli, slurm_cluster)
    run_python(MIXED.format(tried=str(tmp_path / "square-tried")), project)
    run = _the_run("mixed")
    assert run.status == "completed"
    job_id = _slurm_job_id(run.steps["on_slurm"])
    assert slurm_cluster.job(job_id).get("JobState") == "COMPLETED", "the step must really have run on Slurm"

    server = dashboard(project)
    page.goto(server.url + "/")
    row = page.locator(f'table#runs tr[data-run-id="{run.id}"]')
    expect(row).to_contain_text(run.name)
    expect(row).to_contain_text("mixed")
    expect(row).to_contain_text("completed")
    screenshot("runs")

    row.locator(f'a[href$="/runs/{run.id}"]').first.click()  # the runs list links to the run page
    expect(page).to_have_url(re.compile(rf"/runs/{run.id}$"))
    where = {"load": "in-process", "square": "local", "on_slurm": "hpc"}
    nodes = page.locator("svg#dag g.node")
    expect(nodes).to_have_count(3)
    for step_name, place in where.items():
        node = page.locator(f'svg#dag g.node[data-step="{step_name}"]')
        expect(node).to_have_attribute("data-where", place)
        expect(node).to_have_attribute("data-status", "completed")
        expect(node).to_contain_text(step_name)

    bars = page.locator("#timeline .bar")
    expect(bars).to_have_count(4)  # load 1, square 2 (a failure, then the retry), on_slurm 1
    for step_name, attempts in (("load", 1), ("square", 2), ("on_slurm", 1)):
        expect(page.locator(f'#timeline .bar[data-step="{step_name}"]')).to_have_count(attempts)
    first, retry = (page.locator(f'#timeline .bar[data-step="square"][data-attempt="{n}"]') for n in (1, 2))
    expect(first).to_have_attribute("data-outcome", "user-error")  # the step raised: the user's code failed
    expect(retry).to_have_attribute("data-outcome", "completed")
    expect(page.locator('#timeline .bar[data-step="on_slurm"]')).to_have_attribute("data-outcome", "completed")
    expect(page.locator('#totals [data-total="attempts"]')).to_have_text("4")
    expect(page.locator('#totals [data-total="retries"]')).to_have_text("1")
    screenshot("run")

    page.goto(f"{server.url}/runs/{run.id}/steps/on_slurm")
    def field(name: str) -> Any:
        return page.locator(f'#where-card [data-field="{name}"]')

    expect(field("operator")).to_have_text("hpc")
    expect(field("flavor")).to_have_text("slurm")
    expect(field("backend_job_id")).to_have_text(job_id)  # the backend's own job id, as squeue and scontrol name it
    # the node the job ran on, as the remote side names it (the short name is Slurm's NodeName)
    expect(field("host")).to_have_text(re.compile(rf"^{re.escape(slurm_cluster.nodename)}(\..+)?$"))
    expect(page.locator("#attempts .attempt")).to_have_count(1)
    expect(page.locator("pre#logs")).to_contain_text(f"slurm job {job_id}")
    screenshot("step")


def test_the_runs_list_shows_a_new_run_and_follows_it_to_its_end_without_a_reload(
        conveyor_cli, project: Path, tmp_path: Path, dashboard, page, screenshot, background,
        request: pytest.FixtureRequest) -> None:
    """A runs list left open: a run started after it was drawn appears on top (its name linking to its page), its
    duration grows while it runs, and its status turns `completed`, all in the same document."""
    from playwright.sync_api import expect

    conveyor_cli("init")
    opened = tmp_path / "opened"
    opened.write_text("open")
    run_python(TICKER.format(operator=None, gate=str(opened)), project)  # a finished run, already listed
    earlier = _the_run("ticking")
    server = dashboard(project)
    page.goto(server.url + "/")
    rows = page.locator("table#runs tbody tr[data-run-id]")
    expect(rows).to_have_count(1)
    page.evaluate("window.__same_document = true")  # gone if the page reloads

    gate = tmp_path / "gate"
    request.addfinalizer(lambda: gate.write_text("open"))  # the step ends itself should the test fail first
    background.append(_start_script(project, "ticking", TICKER.format(operator=None, gate=str(gate))))
    expect(rows).to_have_count(2)
    new = Client().list_pipeline_runs("ticking", "running")
    assert len(new) == 1, new
    top = rows.first
    expect(top).to_have_attribute("data-run-id", new[0].id)  # newest first, above the earlier run
    expect(rows.nth(1)).to_have_attribute("data-run-id", earlier.id)
    expect(top.locator(f'a[href$="/runs/{new[0].id}"]')).to_have_text(new[0].name)
    expect(top.locator("td.status")).to_have_attribute("data-status", "running")
    shown = top.locator("td.duration").text_content()
    page.wait_for_function("([id, was]) => document.querySelector(`tr[data-run-id='${id}'] td.duration`)"
                           ".textContent !== was", arg=[new[0].id, shown])  # the next poll's figure
    screenshot("runs-live")

    gate.write_text("open")
    background[0].wait(timeout=120)
    expect(top.locator("td.status")).to_have_attribute("data-status", "completed")
    expect(top.locator("td.status .pill")).to_have_text("completed")
    assert page.evaluate("window.__same_document") is True, "the page reloaded instead of updating the list"
    top.locator("a").click()
    expect(page).to_have_url(re.compile(rf"/runs/{new[0].id}$"))


def _follow_a_live_log(project: Path, gate: Path, operator: str, dashboard: Any, page: Any, screenshot: Any,
                       background: list[subprocess.Popen[bytes]]) -> None:
    """Open the step page of a step printing a line every 0.5 s on `operator`: new lines appear in this document
    (no reload) while the step runs, and the search filters them, the new ones too."""
    from playwright.sync_api import expect

    background.append(_start_script(project, "ticking", TICKER.format(operator=operator, gate=str(gate))))
    run = _running_with_log("ticking", "ticker", "tick-1")

    server = dashboard(project)
    page.goto(f"{server.url}/runs/{run.id}/steps/ticker")
    logs = page.locator("pre#logs")
    expect(logs).to_contain_text("tick-1")
    page.evaluate("window.__same_document = true")  # gone if the page reloads: lines must arrive in this document
    seen = max(int(n) for n in re.findall(r"tick-(\d+)", logs.text_content() or ""))
    # three lines the page did not have when it was drawn (~1.5 s of printing) must appear while it stays open
    page.wait_for_function("n => document.querySelector('pre#logs').textContent.includes('tick-' + n)",
                           arg=seen + 3)
    assert page.evaluate("window.__same_document") is True, "the page reloaded instead of following the log"
    screenshot("live")
    assert _the_run("ticking").steps["ticker"].status == "running", "the lines must arrive while the step runs"

    page.locator("input#log-search").fill("tick-2")  # the search keeps the lines that match, new ones included
    page.wait_for_function("n => document.querySelector('pre#logs').textContent.includes('tick-' + n)", arg=seen + 6)
    shown = [t for t in page.locator("pre#logs span.line:not(.hidden)").all_text_contents() if t.strip()]
    assert shown and all("tick-2" in line for line in shown), shown
    assert page.locator("pre#logs span.line.hidden").count() > 0

    gate.write_text("open")
    background[0].wait(timeout=120)
    assert _the_run("ticking").status == "completed"


def test_a_local_steps_logs_grow_on_its_page_without_a_reload(
        conveyor_cli, project: Path, tmp_path: Path, dashboard, page, screenshot, background,
        request: pytest.FixtureRequest) -> None:
    conveyor_cli("init")
    gate = tmp_path / "gate"
    request.addfinalizer(lambda: gate.write_text("open"))  # the step ends itself should the test fail first
    _follow_a_live_log(project, gate, "local", dashboard, page, screenshot, background)


def test_a_slurm_steps_logs_grow_on_its_page_while_the_job_runs(
        slurm_cluster, conveyor_cli, project: Path, tmp_path: Path, dashboard, page, screenshot, background,
        request: pytest.FixtureRequest) -> None:
    conveyor_cli("init")
    _register_slurm(conveyor_cli, slurm_cluster)
    gate = slurm_cluster.work_dir / f"gate-{tmp_path.name}"  # where the job can see it
    request.addfinalizer(lambda: gate.write_text("open"))
    _follow_a_live_log(project, gate, "hpc", dashboard, page, screenshot, background)


def test_stop_on_the_run_page_cancels_the_slurm_job(slurm_cluster, conveyor_cli, project: Path, dashboard, page,
                                                    screenshot, background, request: pytest.FixtureRequest) -> None:
    from playwright.sync_api import expect

    conveyor_cli("init")
    _register_slurm(conveyor_cli, slurm_cluster)
    background.append(_start_script(project, "long_run", LONG_ON_SLURM))
    run = _running_with_log("long_run", "long_job", "started")
    job_id = _slurm_job_id(run.steps["long_job"])
    request.addfinalizer(lambda: slurm_cluster.run("scancel", job_id, check=False))  # should the test fail first
    assert slurm_cluster.job(job_id).get("JobState") == "RUNNING"

    server = dashboard(project)
    page.goto(f"{server.url}/runs/{run.id}")
    expect(page.locator('svg#dag g.node[data-step="long_job"]')).to_have_attribute("data-status", "running")
    expect(page.locator("form#resume-run")).to_have_count(0)  # a running run cannot be resumed
    page.locator("form#stop-run").locator("button, input[type=submit]").first.click()
    expect(page.locator("#flash")).to_be_visible()
    expect(page.locator("#run-status")).to_have_attribute("data-status", "stopped")
    screenshot("stopping")

    # on the backend: Slurm cancelled the job (a running job scancelled ends CANCELLED, tests/fixtures/slurm.py)
    ended = slurm_cluster.wait_job(job_id, timeout=120)
    assert ended["JobState"] == "CANCELLED", ended
    wait_until(lambda: job_id not in slurm_cluster.jobs(), timeout=120, what=f"squeue to forget job {job_id}")
    background[0].wait(timeout=120)
    assert _the_run("long_run").status == "stopped"

    page.goto(f"{server.url}/runs/{run.id}")
    expect(page.locator('svg#dag g.node[data-step="long_job"]')).to_have_attribute("data-status", "stopped")
    expect(page.locator('svg#dag g.node[data-step="prepare"]')).to_have_attribute("data-status", "completed")
    expect(page.locator("form#resume-run")).to_have_count(1)  # a stopped run can be resumed from its page
    screenshot("stopped")


def test_hostile_names_logs_errors_and_metadata_are_shown_as_text(conveyor_cli, project: Path, dashboard, page,
                                                                   screenshot) -> None:
    from playwright.sync_api import expect

    conveyor_cli("init")
    run_python(HOSTILE_STEPS, project, check=False)
    run = _the_run("hostile")
    assert run.status == "failed"
    # run names are checked when a pipeline runs; a shared store written by another tool can still hold any text
    with sqlite3.connect(project / ".conveyor" / "conveyor.db") as db:
        db.execute("UPDATE runs SET name = ? WHERE id = ?", ("run " + HOSTILE, run.id))

    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    server = dashboard(project)

    def nothing_ran() -> None:
        assert dialogs == [], f"the page opened dialogs: {dialogs}"
        assert page.evaluate("window.__pwned") is None, "script from the store ran in the page"
        assert page.locator("img[src=x], svg[onload]").count() == 0, "markup from the store became elements"

    page.goto(server.url + "/")
    expect(page.locator(f'table#runs tr[data-run-id="{run.id}"]')).to_contain_text("run " + HOSTILE)
    nothing_ran()
    page.goto(f"{server.url}/runs/{run.id}")
    expect(page.locator("body")).to_contain_text("run " + HOSTILE)
    nothing_ran()
    page.goto(f"{server.url}/runs/{run.id}/steps/shout")
    expect(page.locator("pre#logs")).to_contain_text("log line: " + HOSTILE)
    expect(page.locator("body")).to_contain_text(HOSTILE)  # the output's preview and the metadata
    nothing_ran()
    page.goto(f"{server.url}/runs/{run.id}/steps/explode")
    expect(page.locator("body")).to_contain_text("error: " + HOSTILE)
    nothing_ran()
    screenshot("hostile")
