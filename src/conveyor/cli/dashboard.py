"""`conveyor dashboard`: serve the web view of this project's runs (conveyor.dashboard; the `dashboard` extra)."""

from __future__ import annotations

import click

from conveyor.cli._common import fail, get_ctx, say


@click.command("dashboard")
@click.option("--port", type=click.IntRange(0, 65535), default=8237, show_default=True,
              help="Port to listen on (0: any free port; the URL printed names it).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Any address other than loopback needs an access token.")
@click.option("--token", default=None, metavar="TOKEN",
              help="Access token to require (default: none on loopback; generated and printed once elsewhere).")
def dashboard(port: int, host: str, token: str | None) -> None:
    """Serve the dashboard of this project's runs: the runs, each run's DAG, timeline and totals, each step's
    'where it ran' card, attempts, artifacts and live logs, the stacks; stop and resume runs.

    It reads the store `conveyor run list` reads (SQLite, or the shared PostgreSQL of CONVEYOR_STORE_URL).
    Needs `pip install 'conveyor[dashboard]'`. Ctrl-C stops it.

    \b
    Examples:
      conveyor dashboard
      conveyor dashboard --port 9000
      conveyor dashboard --host 0.0.0.0            # prints http://0.0.0.0:8237/?token=...
      conveyor dashboard --host 0.0.0.0 --token "$DASHBOARD_TOKEN"
    """
    from conveyor.client import Client
    from conveyor.dashboard.server import check_installed, plan, serve
    from conveyor.exceptions import ConveyorError

    try:
        check_installed()
        p = plan(host, port, token)
    except ConveyorError as err:
        fail(str(err))
    if port == 0:
        import socket
        from dataclasses import replace

        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            p = replace(p, port=s.getsockname()[1])
    serve(Client(get_ctx()), p, lambda line: say(line))
