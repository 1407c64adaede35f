"""The content-hashed code archive: built deterministically, stored once, and what the remote side imports."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conveyor.artifacts.store import ArtifactStore
from conveyor.artifacts import code_archive


def _tree(root: Path) -> None:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "model.py").write_text("WEIGHTS = 3\n")
    (root / ".venv" / "lib").mkdir(parents=True)
    (root / ".venv" / "lib" / "big.py").write_text("x = 1\n")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    (root / "data.csv").write_text("a,b\n")


def test_archive_is_deterministic_and_skips_environments(tmp_path: Path) -> None:
    _tree(tmp_path)
    digest, data = code_archive.build(tmp_path)
    again, data2 = code_archive.build(tmp_path)
    assert (digest, data) == (again, data2)
    names = [p.relative_to(tmp_path).as_posix() for p in code_archive.code_files(tmp_path)]
    assert names == ["pkg/__init__.py", "pkg/model.py"]
    (tmp_path / "pkg" / "model.py").write_text("WEIGHTS = 4\n")
    assert code_archive.build(tmp_path)[0] != digest


def test_upload_once_and_materialize_by_hash(tmp_path: Path, monkeypatch) -> None:
    _tree(tmp_path / "src")
    store = ArtifactStore(str(tmp_path / "store"))
    uri = code_archive.upload(store, tmp_path / "src")
    mtime = os.path.getmtime(store.local_path(uri))
    assert code_archive.upload(store, tmp_path / "src") == uri
    assert os.path.getmtime(store.local_path(uri)) == mtime  # not written twice
    monkeypatch.setenv("CONVEYOR_CODE_CACHE", str(tmp_path / "cache"))
    root = code_archive.materialize(uri, store)
    assert Path(root, "pkg", "model.py").read_text() == "WEIGHTS = 3\n"
    assert code_archive.materialize(uri, store) == root


FLAVOR = '''
    import os
    import subprocess

    from conveyor.step_operators import BaseStepOperator, BaseStepOperatorFlavor


    class FarAway(BaseStepOperator):
        needs_code_archive = True

        def launch(self, info, entrypoint_command, environment):
            subprocess.run(entrypoint_command, env={**os.environ, **environment}, check=True, cwd="/")


    class FarAwayFlavor(BaseStepOperatorFlavor):
        name = "far_away"

        @property
        def implementation_class(self):
            return FarAway
'''

PIPELINE = '''
    from conveyor import pipeline, step

    @step(step_operator="far")
    def where_am_i() -> str:
        import mylib
        return mylib.__file__

    @pipeline(enable_cache=False)
    def archived():
        where_am_i()

    if __name__ == "__main__":
        archived()
'''


def test_a_step_that_needs_the_archive_runs_from_it(project: Path, conveyor_cli, tmp_path: Path) -> None:
    (project / "far_flavor.py").write_text(textwrap.dedent(FLAVOR))
    (project / "mylib.py").write_text("VALUE = 1\n")
    (project / "archived.py").write_text(textwrap.dedent(PIPELINE))
    conveyor_cli("step-operator", "flavor", "register", "far_flavor.FarAwayFlavor")
    conveyor_cli("step-operator", "register", "far", "--flavor=far_away")
    conveyor_cli("stack", "update", "default", "-s", "far")
    cache = tmp_path / "remote-cache"
    env = {**os.environ, "CONVEYOR_QUIET": "1", "CONVEYOR_CODE_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "archived.py"], cwd=project, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    from conveyor import Client

    run = Client().get_pipeline_run("latest")
    used = run.steps["where_am_i"].outputs["output"].load()
    assert used.startswith(str(cache)), used  # imported from the extracted archive, not from the project
    assert list((project / ".conveyor" / "artifacts" / "code").glob("*.zip"))
