"""The component lifecycle commands ZenML users type (`rename`, `copy`, `remove-attribute`, `flavor describe`) for
every component type, and `--output json` on every list and describe command, all through the real executable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class KindCase:
    cli: str  # "step-operator"
    flavor: str
    fields: tuple[str, ...]  # registered with these
    config: dict[str, Any]  # ... and stored as this
    reset: str  # a field set above that has a default
    stack_flag: str  # how `stack register` takes it
    taken: str  # a name the project already has for this type


KINDS = [
    KindCase("step-operator", "local", ("--pending_timeout=10m", "--memory_enforcement=rlimit"),
             {"pending_timeout": 600.0, "memory_enforcement": "rlimit"}, "pending_timeout", "-s", "local"),
    KindCase("orchestrator", "local", ("--max_parallelism=3", "--heartbeat_interval=2"),
             {"max_parallelism": 3, "heartbeat_interval": 2.0}, "max_parallelism", "-o", "default"),
    KindCase("artifact-store", "s3", ("--path=s3://bucket/a", "--region=eu-west-1"),
             {"path": "s3://bucket/a", "region": "eu-west-1"}, "region", "-a", "default"),
]
IDS = [k.cli for k in KINDS]


def assert_user_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit status 1, one `Error:` line that says what to do, no traceback, nothing on stdout."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def as_json(conveyor_cli: Any, *args: str) -> Any:
    """The command's standard output must be JSON and nothing else."""
    return json.loads(conveyor_cli(*args, "--output", "json").stdout)


def register(conveyor_cli: Any, kind: KindCase, name: str) -> None:
    conveyor_cli(kind.cli, "register", name, f"--flavor={kind.flavor}", *kind.fields)


def stack_with(conveyor_cli: Any, kind: KindCase, stack: str, name: str) -> None:
    """A stack holding component `name`, with the defaults for the other types."""
    parts = {"-o": "default", "-a": "default", kind.stack_flag: name}
    conveyor_cli("stack", "register", stack, *(arg for flag, value in parts.items() for arg in (flag, value)))


def stack_component_names(stack: dict[str, Any]) -> dict[str, str]:
    """component id -> name, over every component of a `stack describe --output json`."""
    comps = [stack["orchestrator"], stack["artifact_store"], *stack["step_operators"]]
    return {c["id"]: c["name"] for c in comps}


# -- rename ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_rename_keeps_id_config_and_stacks(conveyor_cli: Any, kind: KindCase) -> None:
    register(conveyor_cli, kind, "first")
    stack_with(conveyor_cli, kind, "other", "first")
    before = as_json(conveyor_cli, kind.cli, "describe", "first")

    proc = conveyor_cli(kind.cli, "rename", "first", "second")
    assert "Renamed" in proc.stdout and "'second'" in proc.stdout and "other" in proc.stdout
    # steps name step operators in code; nothing names an orchestrator or an artifact store there
    assert ("must now name 'second'" in proc.stderr) == (kind.cli == "step-operator"), proc.stderr

    after = as_json(conveyor_cli, kind.cli, "describe", "second")
    assert (after["id"], after["flavor"], after["configuration"]) == (before["id"], kind.flavor, kind.config)
    assert after["stacks"] == ["other"]
    assert stack_component_names(as_json(conveyor_cli, "stack", "describe", "other"))[before["id"]] == "second"
    assert "first" not in [c["name"] for c in as_json(conveyor_cli, kind.cli, "list")]
    assert_user_error(conveyor_cli(kind.cli, "describe", "first", check=False), "no ", "'first'")

    assert_user_error(conveyor_cli(kind.cli, "rename", "second", kind.taken, check=False),
                      f"named {kind.taken!r} already exists")
    assert_user_error(conveyor_cli(kind.cli, "rename", "second", "../up", check=False), "invalid", "'../up'")
    assert_user_error(conveyor_cli(kind.cli, "rename", "missing", "third", check=False),
                      "'missing'", f"conveyor {kind.cli} list")


RENAMED_PIPELINE = '''
    from conveyor import pipeline, step


    @step
    def load() -> int:
        return 20


    @step(step_operator="trainer")
    def train(x: int) -> int:
        return x + 1


    @pipeline(enable_cache=False)
    def renamed_pipeline() -> None:
        train(load())


    if __name__ == "__main__":
        renamed_pipeline()
'''


def test_renamed_step_operator_runs_steps_through_its_stack(conveyor_cli: Any, project: Path) -> None:
    conveyor_cli("step-operator", "register", "gpu", "--flavor=local")
    conveyor_cli("stack", "register", "prod", "-o", "default", "-a", "default", "-s", "gpu", "--set")
    conveyor_cli("step-operator", "rename", "gpu", "trainer")
    script = project / "renamed.py"
    script.write_text(textwrap.dedent(RENAMED_PIPELINE))
    proc = subprocess.run([sys.executable, str(script)], cwd=project, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    run = as_json(conveyor_cli, "run", "describe", "latest")
    assert (run["status"], run["stack"]) == ("completed", "prod")
    train = next(s for s in run["steps"] if s["name"] == "train")
    assert (train["status"], train["step_operator"], train["step_operator_flavor"]) == ("completed", "trainer", "local")

    from conveyor import Client

    assert Client().get_pipeline_run(run["id"]).steps["train"].outputs["output"].load() == 21


def test_rename_refuses_a_step_operator_an_unfinished_run_uses(conveyor_cli: Any) -> None:
    """`run stop` finds a step's backend job through the operator name recorded on the step run."""
    from conveyor.context import get_context

    conveyor_cli("step-operator", "register", "gpu", "--flavor=local")
    store = get_context().store
    pipeline_id, snapshot_id = store.get_or_create_snapshot("p", "hash", {})
    store.create_run(name="p-run-1", pipeline_id=pipeline_id, snapshot_id=snapshot_id, stack_name="default",
                     host="h", pid=1, steps=[("train", {}, "gpu", "local")])
    assert_user_error(conveyor_cli("step-operator", "rename", "gpu", "gpu2", check=False),
                      "p-run-1", "conveyor run stop p-run-1")
    assert store.get_component("step_operator", "gpu") is not None


# -- copy --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_copy_is_a_component_of_its_own(conveyor_cli: Any, kind: KindCase) -> None:
    register(conveyor_cli, kind, "source")
    stack_with(conveyor_cli, kind, "other", "source")
    proc = conveyor_cli(kind.cli, "copy", "source", "target")
    assert "Copied" in proc.stdout

    source = as_json(conveyor_cli, kind.cli, "describe", "source")
    target = as_json(conveyor_cli, kind.cli, "describe", "target")
    assert target["id"] != source["id"]
    assert (target["flavor"], target["configuration"], target["stacks"]) == (kind.flavor, kind.config, [])
    assert source["stacks"] == ["other"]

    conveyor_cli(kind.cli, "remove-attribute", "target", kind.reset)
    assert as_json(conveyor_cli, kind.cli, "describe", "source")["configuration"] == kind.config
    assert kind.reset not in as_json(conveyor_cli, kind.cli, "describe", "target")["configuration"]

    assert_user_error(conveyor_cli(kind.cli, "copy", "source", "target", check=False), "'target' already exists")
    assert_user_error(conveyor_cli(kind.cli, "copy", "missing", "t2", check=False), "'missing'")


# -- remove-attribute ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_remove_attribute_resets_fields_to_their_default(conveyor_cli: Any, kind: KindCase) -> None:
    register(conveyor_cli, kind, "comp")
    flavor = as_json(conveyor_cli, kind.cli, "flavor", "describe", kind.flavor)
    default = next(f["default"] for f in flavor["fields"] if f["name"] == kind.reset)

    proc = conveyor_cli(kind.cli, "remove-attribute", "comp", kind.reset)
    assert f"Reset {kind.reset}" in proc.stdout
    described = as_json(conveyor_cli, kind.cli, "describe", "comp")
    assert described["configuration"] == {k: v for k, v in kind.config.items() if k != kind.reset}
    field = next(f for f in described["fields"] if f["name"] == kind.reset)
    assert (field["is_default"], field["value"]) == (True, default)

    again = conveyor_cli(kind.cli, "remove-attribute", "comp", kind.reset)
    assert "already at the default" in again.stdout

    bad = conveyor_cli(kind.cli, "remove-attribute", "comp", "no_such_field", check=False)
    assert_user_error(bad, "'no_such_field'", kind.reset)  # the valid fields are listed
    assert as_json(conveyor_cli, kind.cli, "describe", "comp")["configuration"] == described["configuration"]


def test_update_to_null_names_remove_attribute(conveyor_cli: Any) -> None:
    """`update --max_parallelism=null` (how a user tries to go back to "no cap") is refused, naming the command
    that resets the field; a plainly wrong value gets no such hint."""
    conveyor_cli("orchestrator", "register", "fast", "--flavor=local", "--max_parallelism=4")
    for value in ("null", "None", ""):
        proc = conveyor_cli("orchestrator", "update", "fast", f"--max_parallelism={value}", check=False)
        assert_user_error(proc, "max_parallelism", "conveyor orchestrator remove-attribute fast max_parallelism")
    wrong = conveyor_cli("orchestrator", "update", "fast", "--max_parallelism=many", check=False)
    assert_user_error(wrong, "max_parallelism")
    assert "remove-attribute" not in wrong.stderr
    assert as_json(conveyor_cli, "orchestrator", "describe", "fast")["configuration"] == {"max_parallelism": 4}
    # a "none" that is a fine value for its own field is not blamed for another field's error
    conveyor_cli("step-operator", "register", "sp", "--flavor=spark", "--master=local[1]", "--master_webui=none")
    other = conveyor_cli("step-operator", "update", "sp", "--master_webui=none", "--poll_interval=soon", check=False)
    assert_user_error(other, "poll_interval")
    assert "remove-attribute" not in other.stderr, other.stderr


@pytest.mark.parametrize(("cli", "flavor", "fields", "required"), [
    ("step-operator", "ssh", ("--hostname=gpu-box", "--port=2222"), "hostname"),
    ("artifact-store", "local", ("--path=/tmp/somewhere",), "path"),
], ids=["step-operator", "artifact-store"])
def test_remove_attribute_refuses_a_required_field(conveyor_cli: Any, cli: str, flavor: str, fields: tuple[str, ...],
                                                   required: str) -> None:
    conveyor_cli(cli, "register", "comp", f"--flavor={flavor}", *fields)
    before = as_json(conveyor_cli, cli, "describe", "comp")["configuration"]
    proc = conveyor_cli(cli, "remove-attribute", "comp", required, check=False)
    assert_user_error(proc, repr(required), "required", f"conveyor {cli} update comp --{required}=VALUE")
    assert as_json(conveyor_cli, cli, "describe", "comp")["configuration"] == before


# -- flavor describe -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cli", "flavor", "field", "field_type", "default", "extra", "settings_key"), [
    ("step-operator", "ssh", "port", "int", 22, "ssh", "step_operator.ssh"),
    ("orchestrator", "local", "max_parallelism", "int | None", None, None, None),
    ("artifact-store", "s3", "region", "str | None", None, "aws", None),
], ids=["step-operator", "orchestrator", "artifact-store"])
def test_flavor_describe_lists_fields_defaults_and_extra(conveyor_cli: Any, cli: str, flavor: str, field: str,
                                                         field_type: str, default: Any, extra: str | None,
                                                         settings_key: str | None) -> None:
    from conveyor.stack.registry import FlavorRegistry

    info = as_json(conveyor_cli, cli, "flavor", "describe", flavor)
    config_class = FlavorRegistry().get(cli.replace("-", "_"), flavor).config_class
    assert [f["name"] for f in info["fields"]] == list(config_class.model_fields)
    described = next(f for f in info["fields"] if f["name"] == field)
    assert (described["type"], described["default"], described["required"]) == (field_type, default, False)
    assert described["description"] == config_class.model_fields[field].description
    if extra is None:
        assert info["integration"] is None
    else:
        assert info["integration"]["extra"] == extra
        assert info["integration"]["installed"] is True  # the test environment has every extra
        assert f"conveyor[{extra}]" in info["integration"]["install_command"]
    assert (info["settings"] or {}).get("key") == settings_key

    text = conveyor_cli(cli, "flavor", "describe", flavor).stdout
    assert field in text and field_type in text
    if extra:
        assert f"(extra {extra!r}): installed" in text
    assert_user_error(conveyor_cli(cli, "flavor", "describe", "nope", check=False), "'nope'", flavor)


def test_flavor_describe_marks_required_fields_and_settings(conveyor_cli: Any) -> None:
    info = as_json(conveyor_cli, "step-operator", "flavor", "describe", "slurm")
    settings = {f["name"]: f for f in info["settings"]["fields"]}
    assert info["settings"]["class_name"] == "SlurmStepOperatorSettings"
    assert settings["exclusive"]["default"] is False and settings["extra_args"]["default"] == []
    ssh = as_json(conveyor_cli, "step-operator", "flavor", "describe", "ssh")
    hostname = next(f for f in ssh["fields"] if f["name"] == "hostname")
    assert (hostname["required"], hostname["default"]) == (True, None)
    text = conveyor_cli("step-operator", "flavor", "describe", "ssh").stdout
    assert any("hostname" in line and "(required)" in line for line in text.splitlines()), text


# -- --output json on every list and describe command ------------------------------------------------------
SECRET_FLAVOR = '''
    from typing import TYPE_CHECKING

    from pydantic import SecretStr

    from conveyor.step_operators import BaseStepOperatorConfig, BaseStepOperatorFlavor


    class TokenConfig(BaseStepOperatorConfig):
        token: SecretStr | None = None
        region: str = "eu"


    class TokenFlavor(BaseStepOperatorFlavor):
        """An operator with a secret in its config."""

        name = "with_token"

        @property
        def config_class(self) -> type[TokenConfig]:
            return TokenConfig

        @property
        def implementation_class(self) -> type:
            raise NotImplementedError
'''

TINY_PIPELINE = '''
    from conveyor import pipeline, step


    @step
    def one() -> int:
        return 1


    @pipeline(enable_cache=False)
    def tiny() -> None:
        one()


    if __name__ == "__main__":
        tiny()
'''

TOKEN = "tok-SHOULD-NEVER-SHOW"
SECRET_VALUE = "secret-value-SHOULD-NEVER-SHOW"

JSON_COMMANDS = [
    (("step-operator", "list"), list, {"id", "name", "type", "flavor", "configuration", "stacks", "created", "updated"}),
    (("step-operator", "describe", "tok"), dict, {"id", "name", "flavor", "stacks", "configuration", "fields"}),
    (("orchestrator", "list"), list, {"id", "name", "flavor", "configuration", "stacks"}),
    (("orchestrator", "describe", "default"), dict, {"id", "name", "flavor", "configuration", "fields"}),
    (("artifact-store", "list"), list, {"id", "name", "flavor", "configuration", "stacks"}),
    (("artifact-store", "describe", "default"), dict, {"id", "name", "flavor", "configuration", "fields"}),
    (("step-operator", "flavor", "list"), list, {"name", "type", "origin", "description", "source", "error"}),
    (("orchestrator", "flavor", "list"), list, {"name", "origin", "description", "source"}),
    (("artifact-store", "flavor", "list"), list, {"name", "origin", "description", "source"}),
    (("step-operator", "flavor", "describe", "with_token"), dict,
     {"name", "type", "origin", "source", "description", "config_class", "fields", "integration", "settings"}),
    (("orchestrator", "flavor", "describe", "local"), dict, {"name", "fields", "integration", "settings"}),
    (("artifact-store", "flavor", "describe", "local"), dict, {"name", "fields", "integration", "settings"}),
    (("stack", "list"), list, {"id", "name", "active", "orchestrator", "artifact_store", "step_operators",
                               "default_step_operator"}),
    (("stack", "describe", "default"), dict, {"id", "name", "active", "orchestrator", "artifact_store",
                                              "step_operators", "default_step_operator"}),
    (("secret", "list"), list, {"name", "keys", "created", "updated"}),
    (("run", "list"), list, {"id", "name", "pipeline", "status", "stack", "start_time", "end_time", "duration_s"}),
    (("run", "describe", "latest"), dict, {"id", "name", "pipeline", "status", "stack", "start_time", "steps"}),
]


@pytest.mark.parametrize(("args", "shape", "keys"), JSON_COMMANDS, ids=[" ".join(c[0]) for c in JSON_COMMANDS])
def test_output_json(conveyor_cli: Any, project: Path, args: tuple[str, ...], shape: type, keys: set[str]) -> None:
    from conveyor.context import get_context
    from conveyor.secrets.vault import Vault

    # set up through the library (the `register`, `stack update` and `secret create` commands have tests of their
    # own): a component with a SecretStr field in the default stack, and a secret
    (project / "token_flavor.py").write_text(textwrap.dedent(SECRET_FLAVOR))
    ctx = get_context()
    ctx.ensure_defaults()
    ctx.store.register_flavor("step_operator", "with_token", "token_flavor.TokenFlavor")
    tok = ctx.store.create_component("step_operator", "tok", "with_token", {"token": TOKEN})
    ctx.store.set_stack_components("default", [c["id"] for c in ctx.store.get_stack("default")["components"]] + [tok])
    Vault(ctx.store).set("wandb", {"api_key": SECRET_VALUE}, replace=False)
    if args[0] == "run":
        (project / "tiny.py").write_text(textwrap.dedent(TINY_PIPELINE))
        subprocess.run([sys.executable, "tiny.py"], cwd=project, check=True, capture_output=True, timeout=120)

    proc = conveyor_cli(*args, "--output", "json")
    data = json.loads(proc.stdout)  # standard output holds the JSON and nothing else
    assert isinstance(data, shape)
    items = data if isinstance(data, list) else [data]
    assert items, proc.stdout
    for item in items:
        assert keys <= set(item), (keys - set(item), item)
    # secrets: masked as in the tables, never their values; no rich markup
    assert TOKEN not in proc.stdout and SECRET_VALUE not in proc.stdout
    assert "[/" not in proc.stdout
    if "tok" in [i.get("name") for i in items] and "configuration" in keys:
        assert next(i for i in items if i["name"] == "tok")["configuration"]["token"] == "********"
    if args[0] == "stack":
        ops = {o["name"]: o for s in items for o in s["step_operators"]}
        assert ops["tok"]["configuration"]["token"] == "********"
    # times are ISO 8601 with their UTC offset
    from datetime import datetime

    for key in ("created", "updated", "start_time"):
        for item in items:
            if item.get(key):
                assert datetime.fromisoformat(item[key]).utcoffset() is not None, item[key]
    if args[:2] == ("run", "describe"):
        latest = get_context().store.list_runs(limit=1)[0]
        assert (data["id"], data["status"], [s["name"] for s in data["steps"]]) == (latest["id"], "completed", ["one"])
    if args == ("secret", "list"):
        assert data == [{"name": "wandb", "keys": ["api_key"], "created": data[0]["created"],
                         "updated": data[0]["updated"]}]


def test_output_table_is_the_default_and_json_is_long_form_only(conveyor_cli: Any) -> None:
    table = conveyor_cli("step-operator", "list").stdout
    assert "local" in table and not table.lstrip().startswith("[")
    wrong = conveyor_cli("stack", "list", "--output", "yaml", check=False)
    assert wrong.returncode == 2 and "'yaml' is not one of 'table', 'json'" in wrong.stderr, wrong.stderr
    # `-o` stays the orchestrator of `stack register`
    conveyor_cli("stack", "register", "s2", "-o", "default", "-a", "default")
    assert as_json(conveyor_cli, "stack", "describe", "s2")["orchestrator"]["name"] == "default"
