"""The dashboard's access and action rules, and the server as a user starts it (`conveyor dashboard` in a real
subprocess): the token off loopback, the Host check, CSRF on every POST, GET never acting, a live log followed
over server-sent events, stop and resume from the page, Ctrl-C stopping it with exit status 0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from dashboard_kit import Project, app_client, dashboard_process, make_project, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return make_project(tmp_path_factory.mktemp("dash-sec") / "project", None)


def _failed(made: Project):
    return next(r for r in made.client().list_pipeline_runs() if r.status == "failed")


def _running_run(client: Any) -> Any:
    """The project's one running run, once the script started by `start_script` has begun it."""
    return wait_for(lambda: next((r for r in client.list_pipeline_runs() if r.status == "running"), None),
                    what="the run to start")


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_off_loopback_a_token_is_needed_by_query_bearer_or_cookie(made: Project) -> None:
    web, _guard = app_client(made, token="s3cret", host="0.0.0.0")
    with web:
        assert web.get("/").status_code == 401
        assert web.get("/?token=wrong").status_code == 403
        assert web.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert web.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        first = web.get("/?token=s3cret&status=failed")
        assert first.status_code == 303 and first.headers["location"] == "/?status=failed"  # token out of the URL
        cookie = first.headers["set-cookie"].lower()
        assert "conveyor_token=s3cret" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert web.get("/?status=failed").status_code == 200  # the cookie carries it now


def test_the_server_refuses_an_empty_token_and_needs_one_off_loopback() -> None:
    from conveyor.dashboard.server import plan
    from conveyor.exceptions import ConveyorError

    with pytest.raises(ConveyorError, match="--token"):
        plan("0.0.0.0", 8237, None, generate=False)
    with pytest.raises(ConveyorError, match="empty"):
        plan("127.0.0.1", 8237, "  ")
    generated = plan("0.0.0.0", 8237, None)
    assert generated.guard.token and generated.url.endswith(f"?token={generated.guard.token}")
    assert plan("127.0.0.1", 8237, None).guard.token is None


def test_on_loopback_another_host_name_is_refused(made: Project) -> None:
    web, _guard = app_client(made)
    with web:
        assert web.get("/", headers={"Host": "evil.example:8237"}).status_code == 400
        assert web.get("/", headers={"Host": "localhost:8237"}).status_code == 200


def test_posts_need_the_csrf_token_and_this_origin_and_get_never_acts(made: Project) -> None:
    started: list[str] = []
    web, guard = app_client(made, resume_runner=started.append)
    failed = _failed(made)
    with web:
        page = web.get(f"/runs/{failed.id}").text
        token = _csrf(page)
        assert token == guard.csrf
        url = f"/runs/{failed.id}/resume"
        assert web.post(url).status_code == 403
        assert web.post(url, data={"csrf": "wrong"}).status_code == 403
        assert web.post(url, data={"csrf": token}, headers={"Origin": "http://evil.example"}).status_code == 403
        assert web.post(url, data={"csrf": token}, headers={"Referer": "http://evil.example/x"}).status_code == 403
        assert web.get(url).status_code == 405 and web.get(f"/runs/{failed.id}/stop").status_code == 405
        assert started == []
        done = web.post(url, data={"csrf": token}, headers={"Origin": "http://127.0.0.1:8237"})
        assert done.status_code == 303 and started == [failed.id]
        flashed = web.get(done.headers["location"], cookies=done.cookies)
        assert '<div id="flash"' in flashed.text and "Resuming run" in flashed.text
    assert made.client().get_pipeline_run(failed.id).status == "failed"  # the stub ran nothing


def test_resume_from_the_page_finishes_a_failed_run(tmp_path: Path) -> None:
    project = make_project(tmp_path / "resume", None)
    failed = _failed(project)
    web, _guard = app_client(project)  # the real resume: a background process, as `conveyor run resume`
    with web:
        token = _csrf(web.get(f"/runs/{failed.id}").text)
        assert web.post(f"/runs/{failed.id}/resume", data={"csrf": token}).status_code == 303
    wait_for(lambda: project.client().get_pipeline_run(failed.id).status == "completed", what="the resumed run")
    assert project.client().get_pipeline_run(failed.id).steps["evaluate"].status == "completed"


def test_conveyor_dashboard_follows_a_live_log_and_exits_0_on_ctrl_c(tmp_path: Path) -> None:
    """A real server and a real running pipeline: the SSE stream delivers a line printed after it opened, the page
    shows the run live with its stop form, and SIGINT ends the server with exit status 0."""
    project = make_project(tmp_path / "live", None)
    script = project.start_script(MARK="mark-42")
    try:
        client = project.client()
        run = _running_run(client)
        wait_for(lambda: client.get_pipeline_run(run.id).steps["slow"].status == "running", what="step slow")
        with dashboard_process(project) as (server, url):
            with httpx.Client(base_url=url.rstrip("/"), timeout=60) as http:
                page = http.get(f"/runs/{run.id}").text
                assert 'data-live="1"' in page and '<form id="stop-run"' in page
                assert re.search(r'data-step="slow" data-status="running"', page)
                seen = ""
                with http.stream("GET", f"/api/runs/{run.id}/steps/slow/logs") as stream:
                    lines = stream.iter_lines()
                    for line in lines:
                        if line.startswith("data: "):
                            seen += json.loads(line[6:]).get("text", "")
                        if "before the wait" in seen:
                            break
                    (project.root / "go").write_text("")  # only now does the step print its second line
                    for line in lines:
                        if line.startswith("data: "):
                            seen += json.loads(line[6:]).get("text", "")
                        if "after the wait mark-42" in seen or line.startswith("event: end"):
                            break
                assert "after the wait mark-42" in seen
            server.send_signal(signal.SIGINT)
            assert server.wait(timeout=30) == 0
        script.wait(timeout=120)
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()


def test_a_log_stream_whose_reader_left_stops_following_while_the_step_prints_nothing(tmp_path: Path) -> None:
    """The thread that follows a step's log for an SSE reader ends within a poll once the reader has gone, not at
    the step's next output: a silent step (here waiting for a file) must not keep it, and its store reads, alive."""
    import asyncio
    import threading

    from conveyor.dashboard.app import _follow

    project = make_project(tmp_path / "left", None)
    script = project.start_script()
    try:
        client = project.client()
        run = _running_run(client)
        wait_for(lambda: "before the wait" in (client.get_pipeline_run(run.id).steps["slow"].logs() or ""),
                 what="step slow printing, then waiting")

        def followers() -> list[threading.Thread]:
            return [t for t in threading.enumerate() if t.name == "dashboard-log-slow"]

        async def read_then_leave() -> str:
            stream = _follow(client, run.id, "slow")
            first = await stream.__anext__()
            assert followers(), "the log is followed by a thread of its own"
            await stream.aclose()  # what the server does when the reader disconnects
            return first

        # in a thread of its own, as the server's loop is: this one may hold a running loop (Playwright's, in an
        # earlier test of the same worker), where asyncio.run refuses to start another
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.append(asyncio.run(read_then_leave())))
        reader.start()
        reader.join(timeout=60)
        assert seen and "before the wait" in seen[0], seen
        wait_for(lambda: not followers(), timeout=10, what="the follower thread to end after its reader left")
        assert client.get_pipeline_run(run.id).steps["slow"].status == "running"  # it ended with no output to see
    finally:
        (project.root / "go").write_text("")
        script.wait(timeout=120)


def test_stop_from_the_page_stops_a_running_run(tmp_path: Path) -> None:
    project = make_project(tmp_path / "stop", None)
    script = project.start_script()
    try:
        client = project.client()
        run = _running_run(client)
        wait_for(lambda: client.get_pipeline_run(run.id).steps["slow"].status == "running", what="step slow")
        web, _guard = app_client(project)
        with web:
            token = _csrf(web.get(f"/runs/{run.id}").text)
            done = web.post(f"/runs/{run.id}/stop", data={"csrf": token})
            assert done.status_code == 303
            assert "Stop requested" in web.get(done.headers["location"], cookies=done.cookies).text
        stopped = client.get_pipeline_run(run.id)
        assert stopped.status == "stopped"
        job = stopped.steps["slow"].attempts[-1].backend_job_id  # the `local` flavor's job: the step's process
        assert job and (not Path(f"/proc/{int(job)}").exists() or _zombie(int(job)))
        script.wait(timeout=120)
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def test_off_loopback_the_cli_prints_a_generated_token_once(made: Project) -> None:
    with dashboard_process(made, "--host", "0.0.0.0") as (server, url):
        token = url.split("?token=")[1]
        base = url.split("?")[0].replace("0.0.0.0", "127.0.0.1")
        assert httpx.get(base, timeout=30).status_code == 401
        assert httpx.get(base, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 200
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0


def test_without_the_extra_the_command_names_it(made: Project, tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['starlette'] = None\n")
    env = {**made.env, "PYTHONPATH": os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([str(Path(sys.executable).with_name("conveyor")), "dashboard"], cwd=made.root, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "pip install 'conveyor[dashboard]'" in proc.stderr
