"""Every page and API route of `conveyor dashboard`, on SQLite and on PostgreSQL, over runs a real pipeline script
made (in-process steps and one on the `local` step operator; one run completed, one failed). The DOM contract the
browser tests rely on (ids, data attributes) is checked here too."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import pytest
from dashboard_kit import HOSTILE, Project, app_client, make_project

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def made(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    """The runs, made once per module and store kind."""
    url = None
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        name = f"dash_{secrets.token_hex(4)}"
        server.create_database(name)
        url = server.url(name)
    yield make_project(tmp_path_factory.mktemp(f"dash-{request.param}") / "project", url)
    if url:
        from conveyor.context import reset_contexts

        reset_contexts()
        request.getfixturevalue("postgres_server").admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def web(made: Project):
    client, _guard = app_client(made)
    with client:
        yield client


def _runs(made: Project) -> dict[str, object]:
    """{status: run view} of the two runs."""
    return {str(r.status): r for r in made.client().list_pipeline_runs()}


def _run_ids(html: str) -> list[str]:
    table = re.search(r'<table id="runs".*?</table>', html, re.S)
    assert table, "no table#runs"
    return re.findall(r'<tr data-run-id="([^"]+)"', table.group(0))


def test_runs_list_filters_and_pages(made: Project, web, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _runs(made)
    page = web.get("/")
    assert page.status_code == 200
    assert set(_run_ids(page.text)) == {r.id for r in runs.values()}
    assert _run_ids(web.get("/?status=failed").text) == [runs["failed"].id]
    assert _run_ids(web.get("/?status=completed&pipeline=demo&stack=default").text) == [runs["completed"].id]
    assert len(_run_ids(web.get("/?operator=local").text)) == 2  # both have a step on `local`
    assert _run_ids(web.get("/?operator=nobody").text) == []
    assert _run_ids(web.get("/?pipeline=other").text) == []
    from conveyor.dashboard import pages

    monkeypatch.setattr(pages, "PAGE_SIZE", 1)
    first = web.get("/")
    assert len(_run_ids(first.text)) == 1 and 'id="next-page"' in first.text
    second = web.get("/?page=2")
    assert _run_ids(second.text) != _run_ids(first.text) and 'id="prev-page"' in second.text
    api = web.get("/api/runs?status=failed").json()
    assert [(r["id"], r["status"]) for r in api] == [(runs["failed"].id, "failed")]


def test_run_page_draws_dag_timeline_totals_and_actions(made: Project, web) -> None:
    runs = _runs(made)
    failed = runs["failed"]
    html = web.get(f"/runs/{failed.id}").text
    nodes = {m[0]: (m[1], m[2]) for m in re.findall(
        r'<g class="node" data-step="([^"]+)" data-status="([^"]+)" data-where="([^"]+)"', html)}
    assert nodes == {"load": ("completed", "in-process"), "train": ("completed", "local"),
                     "evaluate": ("failed", "in-process")}
    assert '<svg id="dag"' in html and html.count('class="edge"') == 2  # load → train → evaluate
    bars = re.findall(r'class="bar outcome-[^"]+" data-step="([^"]+)" data-attempt="(\d+)" data-outcome="([^"]+)"',
                      html)
    assert {(s, o) for s, _a, o in bars} == {("load", "completed"), ("train", "completed"),
                                            ("evaluate", "user-error")}
    assert 'data-phase="running"' in html
    totals = re.search(r'<div id="totals">(.*?)</div>', html, re.S).group(1)
    assert 'data-total="attempts">3<' in totals and 'data-total="retries">0<' in totals
    assert '<form id="resume-run"' in html and '<form id="stop-run"' not in html  # failed: resumable, not running
    done = web.get(f"/runs/{runs['completed'].name}").text  # by name too
    assert '<form id="resume-run"' not in done and 'data-status="completed"' in done


def test_run_json_has_statuses_attempts_and_fragments(made: Project, web) -> None:
    failed = _runs(made)["failed"]
    body = web.get(f"/api/runs/{failed.id}?fragments=1").json()
    assert body["status"] == "failed" and body["finished"] is True
    steps = {s["name"]: s for s in body["steps"]}
    assert steps["train"]["where"] == "local" and steps["train"]["upstream"] == ["load"]
    assert steps["evaluate"]["failure_kind"] == "user"
    attempts = steps["train"]["attempts"]
    assert attempts and attempts[-1]["operator"] == "local" and attempts[-1]["backend_job_id"]
    assert 'class="bar' in body["timeline_html"] and 'data-total="wall"' in body["totals_html"]


def test_step_page_shows_where_it_ran_attempts_artifacts_and_log_tools(made: Project, web) -> None:
    failed = _runs(made)["failed"]
    html = web.get(f"/runs/{failed.id}/steps/train").text
    card = re.search(r'<dl id="where-card".*?</dl>', html, re.S).group(0)
    fields = dict(re.findall(r'data-field="([^"]+)">([^<]*)<', card))
    assert fields["operator"] == "local" and fields["flavor"] == "local"
    assert fields["backend_job_id"] not in ("", "-") and fields["host"] not in ("", "-")
    assert fields["peak_rss"].endswith("MB") and fields["code_hash"] != "-"
    assert '<div id="attempts">' in html and 'data-attempt="1" data-outcome="completed"' in html
    assert '<pre id="logs" data-src="/api/runs/' in html and '<input id="log-search"' in html
    assert "{&#39;w&#39;: 3.0}" in html  # the output's preview
    assert "accuracy" in html and "0.9" in html  # log_metadata
    evaluate = web.get(f"/runs/{failed.id}/steps/evaluate").text
    assert 'data-outcome="user-error"' in evaluate and "Traceback" in evaluate and "model rejected" in evaluate


def test_step_logs_stream_as_server_sent_events(made: Project, web) -> None:
    failed = _runs(made)["failed"]
    response = web.get(f"/api/runs/{failed.id}/steps/train/logs?attempt=1")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert "training on [1, 2, 3]" in "".join(e.get("text", "") for e in events)
    assert "event: end" in response.text


def test_stacks_and_artifacts_pages(made: Project, web) -> None:
    stacks = web.get("/stacks").text
    assert 'data-stack="default"' in stacks and 'data-component="local"' in stacks
    failed = _runs(made)["failed"]
    output = made.client().get_pipeline_run(failed.id).steps["load"].outputs["output"]
    ref = output.name if output.version else output.id
    page = web.get(f"/artifacts/{ref}")
    assert page.status_code == 200 and "[1, 2, 3]" in page.text and 'id="versions"' in page.text


def test_unknown_run_step_or_artifact_is_a_404_that_names_it(made: Project, web) -> None:
    failed = _runs(made)["failed"]
    for path, what in (("/runs/no-such-run", "no-such-run"), (f"/runs/{failed.id}/steps/nope", "nope"),
                       ("/artifacts/nothing_here", "nothing_here"), ("/nowhere", "/nowhere")):
        page = web.get(path)
        assert page.status_code == 404 and what in unescape(page.text), path
    assert "evaluate" in web.get(f"/runs/{failed.id}/steps/nope").text  # lists the run's steps
    assert web.get("/api/runs/no-such-run").status_code == 404


def test_hostile_text_is_shown_escaped_never_as_markup(made: Project, web) -> None:
    failed = _runs(made)["failed"]
    pages = [web.get(f"/runs/{failed.id}").text, web.get(f"/runs/{failed.id}/steps/train").text,
             web.get(f"/runs/{failed.id}/steps/evaluate").text, web.get("/runs/<script>alert(1)</script>").text]
    for html in pages:
        assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in pages[1]  # the parameter and the metadata
    assert "model rejected: &lt;script&gt;" in pages[2]  # the error and its traceback
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[3]  # the 404 page quoting the URL
    stream = web.get(f"/api/runs/{failed.id}/steps/load/logs").text
    texts = "".join(json.loads(line[6:]).get("text", "") for line in stream.splitlines() if line.startswith("data:"))
    assert HOSTILE in texts and "<script>" not in stream  # JSON-escaped on the wire, set as text by the page's JS
    js = (Path(__file__).parents[1] / "src/conveyor/dashboard/static/dashboard.js").read_text()
    assert "textContent" in js and "innerHTML = e" not in js


def test_pages_forbid_foreign_scripts_and_framing(web) -> None:
    headers = web.get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert web.get("/static/dashboard.js").status_code == 200


def test_conveyor_help_and_import_never_load_the_web_stack() -> None:
    import subprocess
    import sys

    probe = ("import sys\nfrom click.testing import CliRunner\nfrom conveyor.cli.main import cli\n"
             "assert CliRunner().invoke(cli, ['--help']).exit_code == 0\n"
             "assert CliRunner().invoke(cli, ['dashboard', '--help']).exit_code == 0\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn', 'jinja2')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
