"""`conveyor integration list | install NAME`: the pip extras flavors need (what `zenml integration` does)."""

from __future__ import annotations

from typing import Any

import click

from conveyor.cli._common import emit, fail, note, output_option, say, show, table

__all__ = ["integration"]


@click.group("integration", help="""List the integrations (pip extras) flavors need, and install one.

\b
Examples:
  conveyor integration list
  conveyor integration install ray -y
""")
def integration() -> None:
    pass


@integration.command("list", help="""Each integration, its pip extra, the flavors that need it and whether its
packages are installed in this environment.""")
@output_option
def list_(output: str) -> None:
    from conveyor.integrations import list_integrations

    rows = list_integrations()
    data: list[dict[str, Any]] = [
        {"name": i.name, "extra": i.extra,
         "flavors": [{"component_type": t, "flavor": f} for t, f in i.flavors],
         "installed": i.installed, "install_command": i.install_command} for i in rows]

    def render() -> None:
        t = table("integration", "extra", "flavors", "installed")
        for row in data:
            flavors = ", ".join(f["flavor"] if f["component_type"] == "step_operator"
                                else f"{f['component_type'].replace('_', ' ')} {f['flavor']}" for f in row["flavors"])
            t.add_row(row["name"], row["extra"], flavors or "-", "yes" if row["installed"] else "no")
        show(t)

    emit(data, render, output)


@integration.command("install", help="""Install integration NAME's packages into this environment (the Python
running conveyor), with this interpreter's pip (or uv when it has no pip).

\b
Examples:
  conveyor integration install ray
  conveyor integration install aws -y
""")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def install(name: str, yes: bool) -> None:
    from conveyor.integrations import install_plan, run_install

    plan = install_plan(name)
    if not plan.command:
        say(f"The {name!r} integration needs no Python packages: nothing to install.", style="green")
        return
    note(f"Installing the {name!r} integration: {', '.join(plan.requirements)}")
    if not yes and not click.confirm(f"Run `{plan.command_line}`?", default=True, err=True):
        raise click.exceptions.Exit(1)
    say(f"Running: {plan.command_line}")
    code = run_install(plan)
    if code != 0:
        fail(f"installing the {name!r} integration failed (exit code {code}): see the installer's output above, "
             f"then run `conveyor integration install {name}` again")
    say(f"Installed the {name!r} integration.", style="green")
