"""Secrets: the CLI, encryption at rest with a key outside the store, references in settings and component
configs resolved only at launch, and the errors a user meets. Delivery to every flavor, with a search for the
value everywhere, is in the conformance suite (`test_a_secret_reaches_the_step_and_appears_nowhere_else`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from conveyor import pipeline, step
from conveyor.exceptions import ConfigError, ConveyorError, RunFailedError
from conveyor.secrets.references import find_references, redact, resolve_references


@step
def read_env(name: str) -> str:
    print(f"value: {os.environ.get(name)}", flush=True)
    return str(len(os.environ.get(name, "")))


def _db_bytes(project: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (project / ".conveyor").glob("conveyor.db*"))


def test_the_cli_keeps_values_encrypted_with_a_key_outside_the_store(project: Path, tmp_path: Path, conveyor_cli):
    conveyor_cli("secret", "create", "wandb", "api_key", "region=eu-1", input="wandb-token-4242\n")
    listed = conveyor_cli("secret", "list").stdout
    assert "wandb" in listed and "api_key, region" in listed and "wandb-token-4242" not in listed
    assert b"wandb-token-4242" not in _db_bytes(project) and b"eu-1" not in _db_bytes(project)
    key = Path(os.environ["CONVEYOR_SECRETS_KEY_FILE"])
    assert key.exists() and not key.is_relative_to(project / ".conveyor")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    conveyor_cli("secret", "update", "wandb", "api_key=new-value-77", "--remove-key", "region")
    assert "api_key" in conveyor_cli("secret", "list").stdout and "region" not in conveyor_cli("secret", "list").stdout
    conveyor_cli("secret", "delete", "wandb")
    assert "No secrets" in conveyor_cli("secret", "list").stdout


def test_cli_errors_say_what_to_do(conveyor_cli, tmp_path: Path):
    conveyor_cli("secret", "create", "db", "password=x1")
    again = conveyor_cli("secret", "create", "db", "password=x2", check=False)
    assert again.returncode == 1 and "conveyor secret update db" in again.stderr
    bad = conveyor_cli("secret", "create", "bad.name", "k=v", check=False)
    assert bad.returncode == 1 and "letters, digits" in bad.stderr
    missing_file = conveyor_cli("secret", "create", "f", f"k=@{tmp_path / 'nope'}", check=False)
    assert missing_file.returncode == 1 and "cannot read the value of k" in missing_file.stderr
    no_stdin = conveyor_cli("secret", "create", "s", "k", input="", check=False)
    assert no_stdin.returncode == 1 and "standard input" in no_stdin.stderr
    gone = conveyor_cli("secret", "delete", "nope", check=False)
    assert gone.returncode == 1 and "conveyor secret list" in gone.stderr


def test_a_reference_is_resolved_at_launch_and_redacted_from_logs(conveyor_cli, project: Path):
    conveyor_cli("secret", "create", "api", "token=tok-0123456789")

    @pipeline(enable_cache=False)
    def p():
        read_env.with_options(settings={"environment": {"API_TOKEN": "Bearer {{api.token}}"}})("API_TOKEN")

    run = p()
    s = run.steps["read_env"]
    assert s.outputs["output"].load() == str(len("Bearer tok-0123456789"))
    assert "value: Bearer ****" in s.logs()
    assert b"tok-0123456789" not in _db_bytes(project)
    assert "API_TOKEN" not in os.environ, "an in-process step's environment is restored afterwards"


def test_a_missing_secret_or_key_fails_the_step_with_the_fix(conveyor_cli):
    conveyor_cli("secret", "create", "api", "token=t-1")

    def run(reference: str):
        @pipeline(enable_cache=False)
        def p():
            read_env.with_options(step_operator="local", settings={"environment": {"X": reference}})("X")

        with pytest.raises(RunFailedError) as info:
            p()
        return str(info.value)

    assert "secret 'nope' does not exist" in run("{{nope.token}}") and "conveyor secret create nope" in \
        run("{{nope.token}}")
    assert "secret 'api' has no key 'missing' (its keys: token)" in run("{{api.missing}}")


def test_a_wrong_key_file_is_a_clear_error(conveyor_cli, tmp_path: Path, monkeypatch):
    conveyor_cli("secret", "create", "api", "token=t-1")
    from cryptography.fernet import Fernet

    other = tmp_path / "other.key"
    other.write_bytes(Fernet.generate_key())
    monkeypatch.setenv("CONVEYOR_SECRETS_KEY_FILE", str(other))
    from conveyor.context import get_context, reset_contexts

    reset_contexts()
    with pytest.raises(ConveyorError, match="not the one it was encrypted with"):
        get_context().vault.lookup("api", "token")


def test_references_outside_environment_settings_are_refused_with_the_way_to_do_it():
    with pytest.raises(ConfigError) as info:
        read_env.with_options(settings={"step_operator.local": {"environment": {"X": "{{api.token}}"}}})
    assert 'settings={"environment": {"MY_VAR": "{{api.token}}"}}' in str(info.value)


def test_an_s3_store_takes_its_credentials_from_secret_references(s3_server, s3_bucket, conveyor_cli, project,
                                                                    monkeypatch):
    key_id, secret_key = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    conveyor_cli("secret", "create", "aws", "key_id", "secret", input=f"{key_id}\n{secret_key}\n")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)  # only the secret can supply them now
    conveyor_cli("artifact-store", "register", "s3sec", "--flavor=s3", f"--path=s3://{s3_bucket}/c",
                 f"--endpoint_url={s3_server.endpoint_url}", "--aws_access_key_id={{aws.key_id}}",
                 "--aws_secret_access_key={{aws.secret}}")
    conveyor_cli("stack", "update", "default", "--artifact-store=s3sec")
    described = conveyor_cli("artifact-store", "describe", "s3sec").stdout
    assert "{{aws.secret}}" in described and secret_key not in described

    @pipeline(enable_cache=False)
    def p():
        read_env.with_options(step_operator="local")("AWS_SECRET_ACCESS_KEY")

    run = p()
    assert run.steps["read_env"].outputs["output"].load() == str(len(secret_key))
    assert "value: ****" in run.steps["read_env"].logs()
    assert secret_key.encode() not in _db_bytes(project)


names = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(max_size=20), secret=names, key=names, value=st.text(min_size=3, max_size=30))
def test_references_resolve_anywhere_in_a_string_and_redaction_hides_the_value(prefix, secret, key, value):
    text = f"{prefix}{{{{{secret}.{key}}}}}{prefix}"
    assert (secret, key) in find_references({"a": [text]})
    resolved, used = resolve_references({"a": [text]}, lambda s, k: value)
    assert resolved["a"][0].count(value) >= 1 and used == {value}
    assert value not in redact(resolved["a"][0], used)
