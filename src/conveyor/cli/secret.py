"""`conveyor secret ...`: create, list, update and delete secrets (values encrypted at rest, never printed)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from conveyor.cli._common import emit, fail, fmt_time, get_ctx, output_option, say, show, table
from conveyor.secrets.vault import check_name

#: the most a secret value may hold, from a file (KEY=@PATH) or standard input
MAX_VALUE_BYTES = 1 << 20
_VALUES_HELP = """KEY=VALUE sets a key; KEY=@PATH reads the value from a file (at most 1 MiB); a bare KEY asks for the value
(hidden) at the terminal, or reads one line per bare key from standard input when it is not a terminal, so
that the value never appears in your shell history or in any process's argv."""


def _values(pairs: tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not key:
            fail(f"invalid {pair!r}: write KEY=VALUE, KEY=@PATH or a bare KEY")
        check_name("key", key)  # before a value is asked for or read
        if not eq:
            if sys.stdin.isatty():
                value = click.prompt(f"value for {key}", hide_input=True)
            else:
                line = sys.stdin.readline(MAX_VALUE_BYTES + 1)
                if not line:
                    fail(f"no value for {key} on standard input (one line per bare KEY)")
                if len(line.rstrip("\n")) > MAX_VALUE_BYTES:
                    fail(f"the value of {key} on standard input is larger than {MAX_VALUE_BYTES // 2**20} MiB, "
                         "the most a secret value may hold")
                value = line.rstrip("\n")
        elif value.startswith("@"):
            value = _read_value_file(key, Path(value[1:]).expanduser())
        values[key] = value
    return values


def _read_value_file(key: str, path: Path) -> str:
    """At most MAX_VALUE_BYTES: `k=@/dev/zero` or a mistyped path to a large file must not eat the memory."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_VALUE_BYTES + 1)
    except OSError as err:
        fail(f"cannot read the value of {key} from {path}: {err.strerror or err}")
    if len(data) > MAX_VALUE_BYTES:
        fail(f"the value of {key} in {path} is larger than {MAX_VALUE_BYTES // 2**20} MiB, the most a secret value "
             "may hold: keep large files in the artifact store or a bucket, and put only their location or "
             "credentials in the secret")
    try:
        return data.decode("utf-8").rstrip("\n")
    except UnicodeDecodeError:
        fail(f"the value of {key} in {path} is not UTF-8 text: encode binary values first (e.g. `base64 {path}`)")


@click.group()
def secret() -> None:
    """Secrets referenced as {{NAME.KEY}} from component configs and settings["environment"].

    Values are encrypted in the metadata store with a key kept outside it (CONVEYOR_SECRETS_KEY, or the
    file CONVEYOR_SECRETS_KEY_FILE, or ~/.config/conveyor/secrets.key made on first use); they are resolved
    only when a step is launched, delivered through the step operator's secret mechanism, and redacted
    from step logs.

    \b
    Examples:
      conveyor secret create wandb api_key          # asks for the value
      conveyor secret create aws key_id=AKIA... secret=@~/.aws/secret
      conveyor secret list
    """


@secret.command("create", help=f"Create secret NAME with one or more keys.\n\n{_VALUES_HELP}")
@click.argument("name")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY[=VALUE|=@PATH]...")
def create(name: str, pairs: tuple[str, ...]) -> None:
    from conveyor.secrets.vault import Vault

    check_name("secret", name)  # before any value is asked for or read
    values = _values(pairs)
    Vault(get_ctx().store).set(name, values, replace=False)
    say(f"Created secret {name} with key(s) {', '.join(sorted(values))}. Refer to it as "
        f"{{{{{name}.{sorted(values)[0]}}}}}.", style="green")


@secret.command("update", help=f"Set keys of secret NAME (other keys are kept).\n\n{_VALUES_HELP}")
@click.argument("name")
@click.argument("pairs", nargs=-1, metavar="KEY[=VALUE|=@PATH]...")
@click.option("--remove-key", "remove", multiple=True, metavar="KEY", help="Remove a key (repeatable).")
def update(name: str, pairs: tuple[str, ...], remove: tuple[str, ...]) -> None:
    from conveyor.secrets.vault import Vault

    vault = Vault(get_ctx().store)
    values = {**vault.get(name), **_values(pairs)}
    for key in remove:
        if values.pop(key, None) is None:
            fail(f"secret {name!r} has no key {key!r}")
    vault.set(name, values, replace=True)
    say(f"Updated secret {name}: key(s) {', '.join(sorted(values))}.", style="green")


@secret.command("list")
@output_option
def list_(output: str) -> None:
    """List secrets and their key names (never their values).

    \b
    Examples:
      conveyor secret list
      conveyor secret list --output json
    """
    rows = get_ctx().store.list_secrets()

    def render() -> None:
        if not rows:
            say("No secrets. Create one with `conveyor secret create NAME KEY=VALUE`.")
            return
        t = table("secret", "keys", "updated")
        for r in rows:
            t.add_row(r["name"], ", ".join(r["keys"]), fmt_time(r["updated"]))
        show(t)

    # the store's listing holds no values (they stay encrypted); only these fields leave it
    emit([{"name": r["name"], "keys": list(r["keys"]), "created": r["created"], "updated": r["updated"]} for r in rows],
         render)


@secret.command("delete")
@click.argument("name")
def delete(name: str) -> None:
    """Delete secret NAME. Steps and components that refer to it fail at launch until it exists again."""
    from conveyor.secrets.vault import Vault

    Vault(get_ctx().store).delete(name)
    say(f"Deleted secret {name}.")
