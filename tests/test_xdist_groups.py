"""`make test` runs the suite on several xdist workers, and each engine still starts once (tests/fixtures/xdist_groups.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent

CONFTEST = textwrap.dedent('''
    import importlib.util
    import os

    import pytest

    # the suite's own hooks, from tests/conftest.py (loaded under another name: this file is `conftest` here)
    spec = importlib.util.spec_from_file_location("suite_conftest", {conftest!r})
    suite = importlib.util.module_from_spec(spec)
    import sys
    sys.path.insert(0, {tests!r})
    spec.loader.exec_module(suite)
    pytest_configure = suite.pytest_configure
    pytest_collection_modifyitems = suite.pytest_collection_modifyitems

    STARTS = {starts!r}


    def _engine(name):
        """A stand-in engine: records which worker started it."""
        with open(os.path.join(STARTS, name), "a") as f:
            f.write(os.environ.get("PYTEST_XDIST_WORKER", "main") + "\\n")
        return name


    @pytest.fixture(scope="session")
    def slurm_cluster():
        return _engine("slurm_cluster")


    @pytest.fixture(scope="session")
    def podman_engine():
        return _engine("podman_engine")


    @pytest.fixture(scope="session")
    def kube_cluster(podman_engine):
        return _engine("kube_cluster")


    @pytest.fixture
    def uses_slurm(slurm_cluster):  # an engine reached through another fixture
        return slurm_cluster
''')

TESTS = textwrap.dedent('''
    import os

    import pytest


    @pytest.mark.parametrize("i", range(6))
    def test_slurm(uses_slurm, i):
        pass


    @pytest.mark.parametrize("i", range(4))
    def test_docker(podman_engine, i):
        pass


    @pytest.mark.parametrize("i", range(4))
    def test_kubernetes(kube_cluster, i):
        pass


    @pytest.mark.parametrize("i", range(12))
    def test_no_engine(i):
        with open(os.path.join({starts!r}, "free"), "a") as f:
            f.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
''')


@pytest.mark.slow
def test_each_engine_starts_on_one_worker_while_other_tests_spread(tmp_path: Path) -> None:
    import xdist  # noqa: F401 - a dev dependency: missing, this fails loudly (never skips in CI)
    suite, starts = tmp_path / "suite", tmp_path / "starts"
    suite.mkdir()
    starts.mkdir()
    (suite / "conftest.py").write_text(CONFTEST.format(conftest=str(TESTS_DIR / "conftest.py"), tests=str(TESTS_DIR),
                                                       starts=str(starts)))
    (suite / "test_engines.py").write_text(TESTS.format(starts=str(starts)))
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "3", "--dist", "loadgroup", "-p", "no:cacheprovider", "-p", "no:kmock",
                           "-q", "--strict-markers",
                           # its own basetemp: a pytest choosing one under /tmp/pytest-of-USER makes that folder 0700,
                           # which locked the ssh tests' unprivileged user out of their tmp_path mid-run
                           "--basetemp", str(tmp_path / "inner-tmp"), str(suite)], cwd=suite, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "26 passed" in done.stdout, done.stdout
    started = {p.name: p.read_text().split() for p in starts.iterdir() if p.name != "free"}
    # one start per engine: a Kubernetes test uses Podman too, yet runs in the kube_cluster group
    assert started["slurm_cluster"] == [started["slurm_cluster"][0]], started
    assert len(started["kube_cluster"]) == 1, started
    assert len(started["podman_engine"]) <= 2, started  # the docker group's worker and the kube group's
    assert len(set((starts / "free").read_text().split())) >= 2, "tests without an engine spread over the workers"
