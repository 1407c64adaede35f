"""Serving the dashboard: the address and token rules checked before anything listens, then uvicorn until Ctrl-C."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.dashboard.security import Guard, is_loopback
from conveyor.exceptions import ConveyorError

if TYPE_CHECKING:
    from conveyor.client import Client

__all__ = ["MISSING_EXTRA", "Plan", "check_installed", "plan", "serve"]

MISSING_EXTRA = ("the dashboard needs its extra: pip install 'conveyor[dashboard]' "
                 "(Starlette, uvicorn and Jinja2; {missing} is not installed)")


def check_installed() -> None:
    """A clear error, naming the extra, when the web stack is not installed."""
    import importlib.util

    for module in ("starlette", "uvicorn", "jinja2"):
        if importlib.util.find_spec(module) is None:
            raise ConveyorError(MISSING_EXTRA.format(missing=module))


@dataclass(frozen=True)
class Plan:
    host: str
    port: int
    guard: Guard
    generated_token: bool

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        base = f"http://{host}:{self.port}/"
        return base + (f"?token={self.guard.token}" if self.guard.token else "")


def plan(host: str, port: int, token: str | None, *, generate: bool = True) -> Plan:
    """The server's access rules: any non-loopback address needs a token (generated when none is given)."""
    if token is not None and not token.strip():
        raise ConveyorError("--token is empty: give a token, or leave --token out to get a generated one")
    if not is_loopback(host) and token is None:
        if not generate:
            raise ConveyorError(f"serving on {host} (reachable from other machines) needs an access token: "
                                "pass --token TOKEN")
        return Plan(host, port, Guard(host, secrets.token_urlsafe(24)), True)
    return Plan(host, port, Guard(host, token), False)


def serve(client: "Client", p: Plan, echo: "Callable[[str], None]") -> None:
    """Listen until Ctrl-C (SIGINT) or SIGTERM; then stop cleanly (open log streams are closed)."""
    import uvicorn

    from conveyor.dashboard.app import create_app

    app = create_app(client, p.guard)
    config = uvicorn.Config(app, host=p.host, port=p.port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2, lifespan="off")
    server = uvicorn.Server(config)
    echo(f"Conveyor dashboard for {client.context.root} ({_store_label(client)}): {p.url}")
    if p.generated_token:
        echo("The token in that URL was generated for this server: keep it to yourself (it is shown only now).")
    echo("Ctrl-C stops it.")
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn stops on Ctrl-C, then raises it again for the caller: a clean stop here
        pass
    echo("Dashboard stopped.")


def _store_label(client: "Client") -> str:
    from conveyor.store.errors import mask_url

    return mask_url(client.context.store_url)


if TYPE_CHECKING:
    from collections.abc import Callable
