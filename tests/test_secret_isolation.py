"""Secrets reach only their step (issue 12 §5): an in-process step's variables never enter the process
environment, so a step started meanwhile (in-process or `local`) and the orchestrator afterwards never see them;
a value printed in pieces is still redacted; `.conveyor/` is private to the user.

The pipelines run as scripts in their own processes, as users run them, with unique planted values; the tests
then search what a user or another step could see: stored logs, the terminal, the environments."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from hypothesis import given, settings, strategies as st

from conveyor.secrets.references import redact
from conveyor.secrets.stream_redaction import StreamRedactor

#: steps meet through marker files, never through sleeps: each waits for the other with a generous deadline
COMMON = textwrap.dedent('''
    import json, os, subprocess, sys, time
    from pathlib import Path
    from conveyor import pipeline, step

    def mark(where: str, name: str) -> None:
        Path(where, name).write_text("1")

    def wait_for(where: str, name: str) -> None:
        deadline = time.monotonic() + 120
        while not Path(where, name).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} never came")
            time.sleep(0.02)

    def child_sees(name: str) -> str:
        """What a subprocess started from here (without env=) sees of variable `name`."""
        code = f"import os; print(os.environ.get({name!r}, 'UNSET'))"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
''')

ISOLATION = COMMON + textwrap.dedent('''
    @step(settings={"environment": {"TOKEN": "{{held.token}}"}})
    def holder(where: str) -> dict:
        """In-process, holding a secret until the bystander's process has started."""
        mark(where, "held")
        wait_for(where, "bystander-started")
        return {"environ": os.environ.get("TOKEN"), "getenv": os.getenv("TOKEN"), "child": child_sees("TOKEN"),
                "system": os.system("test -n \\"$TOKEN\\"") == 0}

    @step
    def gate(where: str) -> dict:
        """In-process, no secret: starts only once holder holds its secret, and lets the bystander go."""
        wait_for(where, "held")
        return {"environ": os.environ.get("TOKEN", "UNSET"), "child": child_sees("TOKEN")}

    @step(step_operator="local")
    def bystander(where: str, seen_by_gate: dict) -> bool:
        """A `local` step with no secret, started while holder held one: prints its whole environment."""
        mark(where, "bystander-started")
        for key, value in sorted(os.environ.items()):
            print(f"{key}={value}", flush=True)
        return "TOKEN" in os.environ

    @step(settings={"environment": {"TOKEN": "{{one.token}}"}})
    def first(where: str) -> dict:
        mark(where, "first")
        wait_for(where, "second")  # both hold their TOKEN now
        seen = {"environ": os.environ["TOKEN"], "child": child_sees("TOKEN")}
        mark(where, "first-read")
        wait_for(where, "second-read")
        return seen

    @step(settings={"environment": {"TOKEN": "{{two.token}}"}})
    def second(where: str) -> dict:
        mark(where, "second")
        wait_for(where, "first")
        seen = {"environ": os.environ["TOKEN"], "child": child_sees("TOKEN")}
        mark(where, "second-read")
        wait_for(where, "first-read")
        return seen

    @pipeline(enable_cache=False)
    def isolated(where: str):
        holder(where)
        bystander(where, gate(where))
        first(where)
        second(where)

    if __name__ == "__main__":
        popen_init, environ_class = subprocess.Popen.__init__, type(os.environ)
        isolated(sys.argv[1])
        report = {"environ": dict(os.environ), "child": subprocess.run(["env"], capture_output=True, text=True).stdout,
                  "restored": subprocess.Popen.__init__ is popen_init and type(os.environ) is environ_class
                              and environ_class is os._Environ}
        print("REPORT " + json.dumps(report))
''')


def _plant(conveyor_cli, name: str) -> str:
    value = f"planted-{name}-{secrets.token_hex(8)}"
    conveyor_cli("secret", "create", name, "token", input=value + "\n")
    return value


def _run_script(project: Path, name: str, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    (project / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "TOKEN"}
    return subprocess.run([sys.executable, name, *args], cwd=project, capture_output=True, text=True, env=env,
                          timeout=300)


def _output(step: str) -> object:
    from conveyor import Client

    return Client().get_pipeline_run("latest").steps[step].outputs["output"].load()


def test_an_in_process_steps_secret_reaches_no_other_step_and_does_not_outlive_it(conveyor_cli, project: Path,
                                                                                 tmp_path: Path):
    held, one, two = (_plant(conveyor_cli, n) for n in ("held", "one", "two"))
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = _run_script(project, "isolated.py", ISOLATION, str(markers))
    terminal = proc.stdout + proc.stderr
    assert proc.returncode == 0, terminal

    # each in-process step sees its own value, through os.environ, os.getenv, a subprocess and os.system
    assert _output("holder") == {"environ": held, "getenv": held, "child": held, "system": True}
    assert _output("first") == {"environ": one, "child": one}
    assert _output("second") == {"environ": two, "child": two}
    # an in-process step running meanwhile, and what it starts, see none
    assert _output("gate") == {"environ": "UNSET", "child": "UNSET"}
    # the `local` step started while holder held its secret saw nothing: neither in its process nor in its log
    assert _output("bystander") is False
    log = conveyor_cli("run", "logs", "latest", "bystander").stdout
    assert "PYTHONUNBUFFERED=1" in log  # it did print its environment
    report = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("REPORT "))[7:])
    assert report["restored"], "os.environ's class and subprocess.Popen are put back after the run"
    assert "TOKEN" not in report["environ"]
    for value in (held, one, two):
        assert value not in log, "the bystander's stored log holds another step's secret"
        assert value not in terminal, "the terminal shows a secret"
        assert value not in json.dumps(report["environ"]), "a secret outlived its step in the orchestrator"
        assert value not in report["child"], "a process started after the run inherits a secret"


PIECES = COMMON + textwrap.dedent('''
    def print_in_pieces() -> None:
        value = os.environ["TOKEN"]
        print(value[:6], end="", flush=True)
        print(value[6:])
        for i in range(0, len(value), 4):
            sys.stdout.write(value[i:i + 4])
            sys.stdout.flush()
        sys.stdout.write(" ends a line\\n")
        sys.stderr.write(value[:-3])
        sys.stderr.write(value[-3:])  # the last thing the step writes, without a newline

    @step(settings={"environment": {"TOKEN": "{{api.token}}"}})
    def here() -> None:
        print_in_pieces()

    @step(step_operator="local", settings={"environment": {"TOKEN": "{{api.token}}"}})
    def there() -> None:
        print_in_pieces()

    @pipeline(enable_cache=False)
    def pieces():
        here()
        there()

    if __name__ == "__main__":
        pieces()
''')


def test_a_value_printed_in_pieces_is_redacted_in_stored_logs_and_on_the_terminal(conveyor_cli, project: Path):
    value = _plant(conveyor_cli, "api")
    proc = _run_script(project, "pieces.py", PIECES)
    terminal = proc.stdout + proc.stderr
    assert proc.returncode == 0, terminal
    for name in ("here", "there"):
        log = conveyor_cli("run", "logs", "latest", name).stdout
        assert log.count("****") == 3 and "**** ends a line" in log, log
        assert value not in log and value[:6] not in log and value[6:] not in log, log
        assert f"[{name}] ****" in terminal, terminal
    assert value not in terminal and value[6:] not in terminal, terminal


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab\n*", max_size=30), st.text(alphabet="abc\n", min_size=3, max_size=10), st.data())
def test_stream_redaction_holds_whatever_the_writes(text: str, value: str, data: st.DataObject) -> None:
    """However the stream is cut into writes, the output is the whole text redacted at once."""
    at = data.draw(st.integers(0, len(text)))
    text = text[:at] + value + text[at:]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=12)))
    redactor = StreamRedactor(lambda: {value})
    out = "".join(redactor.feed(text[a:b]) for a, b in zip([0, *cuts], [*cuts, len(text)])) + redactor.finish()
    assert out == redact(text, {value})
    assert value not in out


PRIVATE = textwrap.dedent('''
    from conveyor import pipeline, step

    @step
    def here() -> int:
        print("in-process output")
        return 1

    @step(step_operator="local")
    def there(x: int) -> int:
        print("local output")
        return x

    @pipeline(enable_cache=False)
    def private():
        there(here())

    if __name__ == "__main__":
        private()
''')


def test_the_project_directory_and_what_it_holds_are_private_to_the_user(project: Path):
    (project / "private.py").write_text(PRIVATE)
    proc = subprocess.run([sys.executable, "-c", "import os, runpy, sys; os.umask(0o022); sys.argv = ['private.py'];"
                           " runpy.run_path('private.py', run_name='__main__')"], cwd=project, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    home = project / ".conveyor"
    checked = [home, home / "conveyor.db", *home.rglob("job.json"), *home.rglob("logs.txt")]
    assert len(list(home.rglob("job.json"))) == 1 and len(list(home.rglob("logs.txt"))) == 2
    for path in [*checked, *(p for p in home.rglob("*") if p.is_dir())]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}: group or others can read it"
