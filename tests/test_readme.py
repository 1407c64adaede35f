"""The README's commands, exactly as written: the Python example, the CLI block, and `make demo` on a clean clone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conveyor import Client

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _blocks(lang: str, after: str | None = None) -> list[str]:
    text = README[README.index(after):] if after else README
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def _user_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "CONVEYOR_QUIET": "1", **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def test_readme_python_example_and_cli_block_run_as_written(project: Path) -> None:
    (project / "example.py").write_text(_blocks("python")[0])
    done = subprocess.run([sys.executable, "example.py"], cwd=project, env=_user_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^train completed .* local$", done.stdout, re.M), done.stdout

    cli_block = _blocks("sh", after="## CLI")[0]
    outputs = []
    for line in cli_block.strip().splitlines():
        proc = subprocess.run(["bash", "-c", line], cwd=project, env=_user_env(), capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, f"README line failed: {line}\n{proc.stdout}\n{proc.stderr}"
        outputs.append(proc.stdout)
    assert Client().active_stack.name == "prod"
    assert Client().active_stack.step_operator_names == ["big", "local"]
    described = outputs[cli_block.strip().splitlines().index("conveyor run describe latest")]
    assert "train" in described and "completed" in described and "local" in described
    assert Client().get_pipeline_run("latest").steps["train"].status == "completed"


def _venv_sharing_the_suites_packages(venv: Path) -> None:
    """An empty venv where `make demo` expects one, whose sys.path ends with this suite's site-packages: the
    demo's dependencies are found there (pip installs none of them; uv links them from its cache), so the test
    builds no second full environment. Only Conveyor itself is installed, from the clone; the suite venv's own
    .pth files (its editable Conveyor) are not processed from a path added this way."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    suite = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "_conveyor_suite_packages.pth").write_text("".join(f"{path}\n" for path in sorted(suite)))


@pytest.mark.slow
def test_make_demo_from_a_clean_clone(tmp_path: Path) -> None:
    if not (REPO / ".git").exists():
        pytest.fail("the suite must run from a git checkout to test `make demo` on a clean clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", f"file://{REPO}", str(clone)], check=True, timeout=120)
    _venv_sharing_the_suites_packages(clone / ".venv")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONVEYOR_", "VIRTUAL_ENV", "PYTEST_")) and k != "PYTHONPATH"}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    first = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    for name in ("load_data", "preprocess", "train", "evaluate"):
        assert re.search(rf"^{name}\s+completed", out, re.M), out
    assert re.search(r"^train\s+completed\s+local\s", out, re.M), out
    accuracy = float(re.search(r"Test accuracy: ([0-9.]+)", out).group(1))
    assert accuracy > 0.9
    second = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert re.search(r"^train\s+cached", second.stdout, re.M), second.stdout
    # what ran was the clone's Conveyor, installed by `make demo`
    where = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c", "import conveyor; print(conveyor.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(clone / "src")), where.stdout + where.stderr
    shutil.rmtree(clone / ".venv", ignore_errors=True)


@pytest.mark.slow
def test_install_into_your_project_as_written(tmp_path: Path) -> None:
    """The README's install block, line by line, in a clean clone with a fresh environment active."""
    if not (REPO / ".git").exists():
        pytest.fail("the suite must run from a git checkout to test the README's install block on a clean clone")
    clone = tmp_path / "conveyor"
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", f"file://{REPO}", str(clone)], check=True, timeout=120)
    venv = tmp_path / "project-env"
    _venv_sharing_the_suites_packages(venv)  # the dependencies are found, not downloaded; Conveyor itself is not
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONVEYOR_", "VIRTUAL_ENV", "PYTEST_")) and k != "PYTHONPATH"}
    env["PATH"] = os.pathsep.join([str(venv / "bin")] + [p for p in env["PATH"].split(os.pathsep) if ".venv" not in p])
    env["VIRTUAL_ENV"] = str(venv)
    env["CONVEYOR_PROJECT_DIR"] = str(tmp_path / "project")
    block = _blocks("sh", after="## Install into your project")[0]
    outputs = {}
    for line in block.strip().splitlines():
        proc = subprocess.run(["bash", "-c", line], cwd=clone, env=env, capture_output=True, text=True, timeout=600,
                              input="y\n")  # a question is answered yes, as the user would
        assert proc.returncode == 0, f"README line failed: {line}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        outputs[line.split("#")[0].strip()] = proc.stdout
    # the environment's own Conveyor now, installed from the checkout (not an editable link to it)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import conveyor; print(conveyor.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0 and where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr
    listed = outputs["conveyor integration list"]
    for name in ("slurm", "postgres", "ray", "aws"):
        assert re.search(rf"^\W*{name}\b", listed, re.M), listed
