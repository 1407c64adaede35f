"""Property-based: whatever a user types after `conveyor step-operator register` / `secret create`, the CLI
answers with success or one `Error:` line (exit 1) or click's usage error (exit 2), never a traceback, and the
store holds a component only when the command succeeded."""

from __future__ import annotations

import itertools

from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings, strategies as st

from conveyor.cli.main import cli

LOCAL_FIELDS = ["pending_timeout", "poll_interval", "memory_enforcement", "infrastructure_retries", "gpu_indices",
                "environment", "warm_spares"]
junk = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
values = st.one_of(junk, st.sampled_from(["1s", "5m", "0.5", "2", "cgroup", "rlimit", "none", "[0]", '{"A": "b"}']), st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(str),
                   st.sampled_from(["", "[]", "{}", "[1, 2]", '{"a": 1}', "true", "10m", "1e309", "[", "{x"]))
field_names = st.one_of(st.sampled_from(LOCAL_FIELDS), st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
counter = itertools.count()


def _check(result) -> None:
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in output, output
    assert result.exit_code in (0, 1, 2), (result.exit_code, output, result.exception)
    if result.exit_code == 1:
        lines = [ln for ln in output.splitlines() if ln.strip()]
        assert lines and lines[-1].startswith("Error: "), output


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.lists(st.tuples(field_names, values), max_size=4), flavor=st.sampled_from(["local", "fault", "nope"]))
def test_register_with_arbitrary_fields_succeeds_or_says_why(project, fields, flavor) -> None:
    from conveyor.context import get_context

    name = f"op{next(counter)}"
    args = ["step-operator", "register", name, f"--flavor={flavor}"] + [f"--{k}={v}" for k, v in fields]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    _check(result)
    stored = get_context().store.get_component("step_operator", name)
    assert (stored is not None) == (result.exit_code == 0), result.output
    event(f"exit {result.exit_code}")
    if stored is not None:  # what was accepted builds, and so can be used
        from conveyor.stack.stack import build_component

        build_component(get_context().registry, stored)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,10}", fullmatch=True), junk),
       pairs=st.lists(st.tuples(st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,10}", fullmatch=True), junk), junk),
                      min_size=1, max_size=3))
def test_secret_create_with_arbitrary_input_succeeds_or_says_why(project, name, pairs) -> None:
    from conveyor.context import get_context

    args = ["secret", "create", name or "x"] + [f"{k}={v}" for k, v in pairs]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    _check(result)
    event(f"exit {result.exit_code}")
    if result.exit_code == 0:
        expected = {}
        for pair in args[3:]:
            key, _, value = pair.partition("=")
            expected[key] = value
        assert get_context().vault.get(name or "x") == expected
        get_context().vault.delete(name or "x")
