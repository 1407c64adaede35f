"""The dashboard's web application (Starlette): pages, the JSON the pages poll, the log stream, and the two actions.

Every read goes through `Client`, every action calls a `Client` method: the web layer only formats. Endpoints that
read are plain functions (Starlette runs them in its thread pool, as the store's calls block); the log stream is
a server-sent event stream fed by `Client.follow_log_events` running in a thread of its own."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from conveyor.dashboard import model, pages
from conveyor.dashboard.security import COOKIE, Guard
from conveyor.exceptions import ConveyorError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from conveyor.client import Client, PipelineRun, StepRunView

__all__ = ["create_app"]

FLASH_COOKIE = "conveyor_flash"
KEEPALIVE_S = 15.0
#: what the pages may load: only this server's own files (images of previews come as data: URLs)
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


class NotFound(Exception):
    """A run, step or artifact the URL names does not exist: a 404 page that says which."""


def _page(request: Request, guard: Guard, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    flash = request.cookies.get(FLASH_COOKIE)
    kind, _, text = unquote(flash).partition(":") if flash else ("", "", "")
    html = pages.render(template, csrf=guard.csrf, flash=text or None, flash_kind=kind or "info", **context)
    response = HTMLResponse(html, status_code=status_code)
    if flash:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def _error_page(guard: Guard, status_code: int, heading: str, message: str) -> HTMLResponse:
    return HTMLResponse(pages.render("error.html", title=heading, page="error", heading=heading, message=message,
                                     csrf=guard.csrf), status_code=status_code)


def _redirect_with_flash(url: str, kind: str, text: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(FLASH_COOKIE, quote(f"{kind}:{text}", safe=""), path="/", httponly=True, samesite="strict")
    return response


def create_app(client: "Client", guard: Guard, *, resume_runner: "Callable[[str], None] | None" = None) -> Starlette:
    """The application for `client`'s store. `resume_runner(run_id)` starts a resume in the background (default:
    `conveyor.dashboard.resume.start_resume`, a process of its own, as `conveyor run resume` is)."""
    from conveyor.dashboard.resume import start_resume

    start = resume_runner or (lambda run_id: start_resume(client.context, run_id))

    def find_run(ref: str) -> "PipelineRun":
        try:
            return client.get_pipeline_run(ref)
        except ConveyorError as err:
            raise NotFound(f"No run {ref!r}: {err}") from None

    def find_step(run: "PipelineRun", name: str) -> "StepRunView":
        if name not in run.steps:
            raise NotFound(f"Run {run.name} has no step {name!r}; its steps: {', '.join(run.steps) or '(none)'}.")
        return run.steps[name]

    # -- pages ---------------------------------------------------------------------------------------------------
    def runs_page(request: Request) -> Response:
        q = pages.RunsQuery.from_params(request.query_params)
        return _page(request, guard, "runs.html", **pages.runs_context(client, q))

    def run_page(request: Request) -> Response:
        run = find_run(request.path_params["run_id"])
        return _page(request, guard, "run.html", **pages.run_context(client, run))

    def step_page(request: Request) -> Response:
        run = find_run(request.path_params["run_id"])
        step = find_step(run, request.path_params["step"])
        try:
            attempt = int(request.query_params["attempt"]) if "attempt" in request.query_params else None
        except ValueError:
            attempt = None
        return _page(request, guard, "step.html", **pages.step_context(client, run, step, attempt))

    def stacks_page(request: Request) -> Response:
        return _page(request, guard, "stacks.html", **pages.stacks_context(client.list_stacks()))

    def artifact_page(request: Request) -> Response:
        name = request.path_params["name"]
        versions = client.list_artifact_versions(name)
        if not versions:
            try:
                versions = [client.get_artifact_version(name)]
            except ConveyorError:
                raise NotFound(f"No artifact named or with id {name!r} (see `conveyor artifact list`).") from None
        return _page(request, guard, "artifact.html", **pages.artifact_context(name, versions))

    # -- JSON ------------------------------------------------------------------------------------------------------
    def api_runs(request: Request) -> Response:
        q = pages.RunsQuery.from_params(request.query_params)
        rows, more = pages.run_rows(client, q)
        return JSONResponse([dataclasses.asdict(row) for row in rows], headers={"X-More": "1" if more else "0"})

    def api_run(request: Request) -> Response:
        run = find_run(request.path_params["run_id"])
        body = model.run_json(run, pages.shown_status(client, run))
        if request.query_params.get("fragments"):
            body.update(pages.fragments(client, run))
        return JSONResponse(body)

    async def api_logs(request: Request) -> Response:
        run = await run_in_threadpool(find_run, request.path_params["run_id"])
        step = find_step(run, request.path_params["step"])
        raw = request.query_params.get("attempt")
        attempt = int(raw) if raw and raw.isdigit() else None
        past = attempt is not None and attempt != step.attempt and any(a.number == attempt for a in step.attempts)
        if past:
            text = await run_in_threadpool(client.step_log, step, attempt)
            return StreamingResponse(_once(text), media_type="text/event-stream", headers=_SSE_HEADERS)
        return StreamingResponse(_follow(client, run.id, step.name), media_type="text/event-stream",
                                 headers=_SSE_HEADERS)

    # -- actions ---------------------------------------------------------------------------------------------------
    async def checked_post(request: Request) -> str | None:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        return guard.post_allowed((form.get("csrf") or [None])[0], request.headers.get("host"),
                                  request.headers.get("origin"), request.headers.get("referer"))

    async def stop(request: Request) -> Response:
        refused = await checked_post(request)
        if refused:
            return _error_page(guard, 403, "Refused", refused)
        run = await run_in_threadpool(find_run, request.path_params["run_id"])
        url = f"/runs/{quote(run.id, safe='')}"
        if run.status != "running":
            return _redirect_with_flash(url, "info", f"Run {run.name} is already {run.status}: nothing to stop.")
        messages: list[str] = []
        try:
            done = await run_in_threadpool(client.stop_run, run.id, wait_s=15.0, on_message=messages.append)
        except ConveyorError as err:
            return _redirect_with_flash(url, "error", f"Stopping run {run.name} failed: {err}")
        text = f"Stop requested for run {run.name}." + (" Its orchestrator was gone: marked it stopped."
                                                        if done.marked_by_stop else "")
        return _redirect_with_flash(url, "info", " ".join([text, *messages]))

    async def resume(request: Request) -> Response:
        refused = await checked_post(request)
        if refused:
            return _error_page(guard, 403, "Refused", refused)
        run = await run_in_threadpool(find_run, request.path_params["run_id"])
        url = f"/runs/{quote(run.id, safe='')}"
        status = await run_in_threadpool(pages.shown_status, client, run)
        if status not in ("failed", "stopped", "abandoned"):
            return _redirect_with_flash(url, "error", f"Run {run.name} is {status}: only a failed, stopped or "
                                                      "abandoned run can be resumed.")
        try:
            await run_in_threadpool(start, run.id)
        except (ConveyorError, OSError) as err:
            return _redirect_with_flash(url, "error", f"Resuming run {run.name} failed to start: {err}")
        return _redirect_with_flash(url, "info", f"Resuming run {run.name} in the background: this page follows it.")

    # -- errors and access ---------------------------------------------------------------------------------------
    async def not_found(request: Request, exc: Exception) -> Response:
        message = str(exc) if isinstance(exc, NotFound) else f"Nothing at {request.url.path}."
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=404)
        return _error_page(guard, 404, "Not found", message)

    async def access(request: Request, call_next: Any) -> Response:
        if not guard.host_allowed(request.headers.get("host")):
            return Response("This dashboard answers to 127.0.0.1 or localhost only (the Host header named another "
                            "machine).", status_code=400, media_type="text/plain")
        if not request.url.path.startswith("/static/"):
            code = guard.access(request.query_params.get("token"), request.headers.get("authorization"),
                                request.cookies.get(COOKIE))
            if code != 200:
                why = ("This dashboard needs its access token: open the URL `conveyor dashboard` printed "
                       "(http://HOST:PORT/?token=...), or send `Authorization: Bearer TOKEN`." if code == 401
                       else "Wrong access token: use the one `conveyor dashboard` printed, or its --token.")
                return _error_page(guard, code, "Unauthorized" if code == 401 else "Forbidden", why)
            if guard.token and "token" in request.query_params and request.method == "GET":
                # keep the token out of the address bar and history: a cookie carries it from now on
                rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                response: Response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
                response.set_cookie(COOKIE, guard.token, path="/", httponly=True, samesite="strict")
                return response
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    routes = [
        Route("/", runs_page),
        Route("/runs/{run_id}", run_page),
        Route("/runs/{run_id}/stop", stop, methods=["POST"]),
        Route("/runs/{run_id}/resume", resume, methods=["POST"]),
        Route("/runs/{run_id}/steps/{step:path}", step_page),
        Route("/stacks", stacks_page),
        Route("/artifacts/{name:path}", artifact_page),
        Route("/api/runs", api_runs),
        Route("/api/runs/{run_id}", api_run),
        Route("/api/runs/{run_id}/steps/{step:path}/logs", api_logs),
        Mount("/static", StaticFiles(directory=pages.HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=access)],
                     exception_handlers={NotFound: not_found, 404: not_found})


# -- server-sent events ------------------------------------------------------------------------------------------
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _event(data: dict[str, Any], event: str | None = None) -> str:
    # `<`, `>` and `&` as JSON escapes: a stream opened by mistake as a page shows no markup
    text = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (f"event: {event}\n" if event else "") + f"data: {text}\n\n"


async def _once(text: str) -> "AsyncIterator[str]":
    if text:
        yield _event({"text": text})
    yield _event({"reason": "ended"}, "end")


async def _follow(client: "Client", run_id: str, step: str) -> "AsyncIterator[str]":
    """The step's log as it is written: `Client.follow_log_events` in a thread, its chunks handed over here."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    gone = threading.Event()

    def put(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the server's loop has closed
            gone.set()

    def pump() -> None:
        # `gone` ends the follow within a poll once the reader has left, even while the step prints nothing
        try:
            for chunk in client.follow_log_events(run_id, step, stop=gone):
                if gone.is_set():
                    return
                put(chunk)
            put(None)
        except Exception as err:  # noqa: BLE001 - the page shows it
            put(err)

    threading.Thread(target=pump, name=f"dashboard-log-{step}", daemon=True).start()
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if item is None:
                yield _event({"reason": "the step has ended"}, "end")
                return
            if isinstance(item, Exception):
                yield _event({"reason": f"following the log failed: {item}"}, "end")
                return
            if item.attempt is not None:
                yield _event({"attempt": item.attempt}, "attempt")
            elif item.abandoned:
                yield _event({"reason": "the run is abandoned (its orchestrator is gone)"}, "end")
                return
            elif item.text:
                yield _event({"text": item.text})
    finally:
        gone.set()
