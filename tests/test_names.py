"""Names cannot escape or collide: every name a user gives is checked against one pattern before anything is
written, and the artifact store refuses any path that climbs out of its root whatever the name."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any

import pytest

from conveyor import pipeline, step
from conveyor.config.names import NAME_PATTERN, InvalidNameError

HOSTILE = {"parent": "../x", "dot": "x/.", "slash": "a/b", "empty": "", "newline": "\n", "markup": "[red]x[/red]",
           "long": "x" * 1000}


@pytest.fixture
def sentinel(project: Path) -> Path:
    """A directory beside the artifact store with a file in it: the one `../` in a name once emptied."""
    victim = project / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    return victim / "keep.txt"


@step
def value(v: int) -> int:
    return v


@step
def collect(a: int, b: int) -> list[int]:
    return [a, b]


@pytest.mark.parametrize("bad", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_names_are_refused_through_the_python_api_naming_the_pattern(bad: str) -> None:
    def f() -> int:
        return 1

    def calls_with_id() -> None:
        value(1, id=bad)

    attempts = {
        "step": lambda: step(name=bad)(f),
        "step with_options": lambda: value.with_options(name=bad),
        "pipeline": lambda: pipeline(name=bad)(f),
        "pipeline with_options": lambda: pipeline(f).with_options(name=bad),
        "invocation id": lambda: pipeline(calls_with_id).compile(),
    }
    for what, attempt in attempts.items():
        with pytest.raises(InvalidNameError) as info:
            attempt()
        assert NAME_PATTERN in str(info.value), (what, str(info.value))
        assert "\n" not in str(info.value), f"{what}: the error must stay one line"


@pytest.mark.parametrize("bad", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_output_names_are_refused(bad: str) -> None:
    def single():
        return 1

    def several():
        return 1, 2

    # set by hand: this module's annotations are strings (PEP 563), and `bad` is a local they could not see
    single.__annotations__ = {"return": Annotated[int, bad]}
    several.__annotations__ = {"return": tuple[Annotated[int, "fine"], Annotated[int, bad]]}
    for func in (single, several):
        with pytest.raises(InvalidNameError, match="invalid output name") as info:
            step(func)
        assert NAME_PATTERN in str(info.value)


def test_a_step_x_and_a_step_x_dot_never_share_a_folder() -> None:
    @pipeline(enable_cache=False)
    def shared():
        collect(value(111, id="x"), value(222, id="x/."))

    with pytest.raises(InvalidNameError, match=r"invalid step id name 'x/\.'"):
        shared()

    @pipeline(enable_cache=False)
    def distinct():  # `x.` is a valid name of its own, and a folder of its own
        collect(value(111, id="x"), value(222, id="x."))

    assert distinct().steps["collect"].outputs["output"].load() == [111, 222]


TRAVERSAL = textwrap.dedent('''
    """A user's script whose output name climbs 8 levels up from where outputs go
    (.conveyor/artifacts/runs/<id>/steps/<step>/attempt-1/outputs/): to the victim beside .conveyor."""
    from typing import Annotated

    from conveyor import pipeline, step


    @step
    def escape() -> Annotated[int, "../../../../../../../../victim"]:
        return 1


    @pipeline
    def p():
        escape()


    p()
''')


def test_a_script_with_an_escaping_output_name_fails_before_writing_anything(project: Path, sentinel: Path) -> None:
    (project / "escape.py").write_text(TRAVERSAL)
    proc = subprocess.run([sys.executable, "escape.py"], cwd=project, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "invalid output name" in proc.stderr and NAME_PATTERN in proc.stderr, proc.stderr
    assert sentinel.read_text() == "precious"
    assert sorted(p.name for p in sentinel.parent.iterdir()) == ["keep.txt"]


def test_the_artifact_store_refuses_paths_outside_its_root_even_when_a_name_got_through(project: Path,
                                                                                        sentinel: Path) -> None:
    """Defence in depth: a step whose output name was changed after the check (here by hand) still cannot write or
    delete outside the store; the step fails as `store`, saying why."""
    from conveyor.exceptions import RunFailedError
    from conveyor.steps.outputs import OutputSpec

    @step
    def sneaky() -> int:
        return 1

    sneaky.outputs = (OutputSpec("../../../../../../../../victim", Any),)  # what no checked name can be

    @pipeline(enable_cache=False)
    def p():
        sneaky()

    with pytest.raises(RunFailedError) as info:
        p()
    step_run = info.value.run.steps["sneaky"]
    assert step_run.failure_kind == "store", step_run.error
    assert "outside the artifact store" in step_run.error and NAME_PATTERN in step_run.error
    assert sentinel.read_text() == "precious"
    assert sorted(p.name for p in sentinel.parent.iterdir()) == ["keep.txt"]


def test_every_write_and_remove_of_the_artifact_store_stays_inside_its_root(tmp_path: Path) -> None:
    from conveyor.artifacts.store import ArtifactStore, ArtifactStoreError

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    store = ArtifactStore(tmp_path / "store")
    escaping = [store.join("runs", "r", "steps", "../../../../victim"), "../victim", str(victim), f"{tmp_path}/store/.."]
    for uri in escaping:
        for what, attempt in {
            "write_bytes": lambda: store.write_bytes(f"{uri}/f", b"x"),
            "write_private": lambda: store.write_private(f"{uri}/f", b"x"),
            "open": lambda: store.open(f"{uri}/f", "wb"),
            "makedirs": lambda: store.makedirs(f"{uri}/d"),
            "rm": lambda: store.rm(uri, recursive=True),
            "atomic_dir": lambda: store.atomic_dir(uri).__enter__(),
        }.items():
            with pytest.raises(ArtifactStoreError, match="outside the artifact store"):
                attempt()
    assert [p.name for p in victim.iterdir()] == ["keep.txt"]
    with pytest.raises(ArtifactStoreError, match="outside the artifact store"):  # a read that climbs out, too
        store.read_bytes(store.join("runs", "../../victim/keep.txt"))
    store.write_bytes(store.join("runs", "r", "ok.txt"), b"fine")  # what stays inside still works
    assert store.read_bytes(store.join("runs", "r", "ok.txt")) == b"fine"


CLI_CASES = [
    ("step-operator", ["step-operator", "register", "{name}", "--flavor=local"], ["step-operator", "list"]),
    ("artifact-store", ["artifact-store", "register", "{name}", "--flavor=local", "--path=/tmp/conveyor-x"],
     ["artifact-store", "list"]),
    ("stack", ["stack", "register", "{name}", "-o", "default", "-a", "default"], ["stack", "list"]),
    ("secret", ["secret", "create", "{name}", "k=v"], ["secret", "list"]),
]


@pytest.mark.parametrize("kind,command,listing", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_hostile_names_are_refused_by_the_cli_with_one_line_naming_the_pattern(kind, command, listing, conveyor_cli,
                                                                               project: Path, sentinel: Path) -> None:
    names = HOSTILE.values() if kind in ("step-operator", "secret") else [HOSTILE["parent"], HOSTILE["markup"]]
    before = conveyor_cli(*listing).stdout
    for bad in names:
        proc = conveyor_cli(*[part.replace("{name}", bad) for part in command], check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), (bad, proc.stderr)
        assert "names must match ^[A-Za-z0-9_]" in lines[0], lines[0]  # the pattern itself
    assert conveyor_cli(*listing).stdout == before, "a refused name left something behind"
    assert sentinel.read_text() == "precious"


def test_a_secret_value_from_a_file_is_read_up_to_one_mib(conveyor_cli, tmp_path: Path) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_text("s3cr3t-value\n")
    big.write_bytes(b"x" * ((1 << 20) + 1))
    conveyor_cli("secret", "create", "fromfile", f"k=@{small}")
    for source in (big, Path("/dev/zero")):
        proc = conveyor_cli("secret", "create", "toobig", f"k=@{source}", check=False, timeout=60)
        assert proc.returncode == 1 and "larger than 1 MiB" in proc.stderr, proc.stderr
    assert "toobig" not in conveyor_cli("secret", "list").stdout
