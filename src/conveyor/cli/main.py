"""The `conveyor` command group, and the one place where errors become a red line instead of a traceback."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from conveyor.cli._common import UserError, err_console


def _store_error_message(err: BaseException) -> str | None:
    """A database error the store layer did not translate (it translates its own): the same words."""
    from conveyor.store.errors import is_driver_error

    if not is_driver_error(err):
        return None
    from conveyor.context import get_context
    from conveyor.store.errors import explain

    try:
        url = get_context().store_url
    except Exception:  # noqa: BLE001 - only for the message
        url = os.environ.get("CONVEYOR_STORE_URL") or "(unknown)"
    return explain(err, url)


class ConveyorGroup(click.Group):
    """Turns Conveyor's own errors into one clear line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # `conveyor run logs RUN | head`: the reader left; that is not an error.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(0) from None
        except KeyboardInterrupt:
            err_console().print("Interrupted.", style="yellow")
            raise click.exceptions.Exit(130) from None
        except Exception as err:  # noqa: BLE001 - sorted below
            from pydantic import ValidationError

            from conveyor.exceptions import ConveyorError

            if isinstance(err, ConveyorError):
                raise UserError(str(err).strip() or type(err).__name__) from None
            if isinstance(err, ValidationError):
                first = err.errors()[0] if err.errors() else {"loc": (), "msg": str(err)}
                loc = ".".join(str(p) for p in first["loc"])
                raise UserError(f"invalid value{' for ' + loc if loc else ''}: {first['msg']}") from None
            message = _store_error_message(err)
            if message:
                raise UserError(message) from None
            if os.environ.get("CONVEYOR_DEBUG"):
                raise
            raise UserError(f"internal error: {type(err).__name__}: {err}. This is a bug in Conveyor; "
                            "run again with CONVEYOR_DEBUG=1 for the traceback and report it.") from None


@click.group(cls=ConveyorGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="conveyor", prog_name="conveyor")
def cli() -> None:
    """Conveyor: ML pipelines whose steps can be handed to a step operator.

    \b
    Examples:
      conveyor init
      conveyor step-operator flavor list
      conveyor step-operator register gpu --flavor=local --pending_timeout=10m
      conveyor stack register prod -o default -a default -s gpu && conveyor stack set prod
      conveyor run list
      conveyor run logs RUN train --follow
    """


def _register() -> None:
    from conveyor.cli.artifact import artifact
    from conveyor.cli.build import build
    from conveyor.cli.cache import cache
    from conveyor.cli.components import component_groups
    from conveyor.cli.dashboard import dashboard
    from conveyor.cli.init import init
    from conveyor.cli.integration import integration
    from conveyor.cli.pipeline import pipeline
    from conveyor.cli.run import run
    from conveyor.cli.secret import secret
    from conveyor.cli.stack import stack

    cli.add_command(init)
    cli.add_command(stack)
    for group in component_groups():
        cli.add_command(group)
    cli.add_command(pipeline)
    cli.add_command(run)
    cli.add_command(artifact)
    cli.add_command(build)
    cli.add_command(secret)
    cli.add_command(cache)
    cli.add_command(integration)
    cli.add_command(dashboard)


_register()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())
