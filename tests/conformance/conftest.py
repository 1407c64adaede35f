"""The conformance suite runs every test against every step operator flavor (as dlt tests every destination)."""

from __future__ import annotations

import pytest
from backends import BACKENDS, CAPABILITIES, REQUEST_ONLY, Backend
from testkit import add_step_operator

#: the engine fixture (= xdist group, tests/fixtures/xdist_groups.py) each flavor's backend gets through
#: request.getfixturevalue, so that under `--dist loadgroup` every engine starts on one worker only
FLAVOR_ENGINES: dict[str, str] = {
    "slurm": "slurm_cluster", "ssh": "sshd_server", "ray": "ray_cluster", "spark": "spark_cluster",
    "docker": "podman_engine", "kubernetes": "kube_cluster", "vertex": "vertex_fake", "sagemaker": "sagemaker_cloud",
    "azureml": "azureml_fake",
}
#: flavors whose backend needs no engine: their tests go to any worker
ENGINE_FREE: frozenset[str] = frozenset({"local", "fault", "modal"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(capability): only for flavors whose backend has that capability")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `needs(x)` is generated only for flavors with capability x: not a skip, simply not a case."""
    if "flavor" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("needs")
        wanted = set(marker.args) if marker else set()
        flavors = [f for f in BACKENDS if wanted <= CAPABILITIES[f]]
        if metafunc.definition.originalname != "test_dry_run_matches_the_golden_file":
            flavors = [f for f in flavors if f not in REQUEST_ONLY]  # no service to run on: request only
        unknown = set(flavors) - FLAVOR_ENGINES.keys() - ENGINE_FREE
        if unknown:
            raise pytest.UsageError(f"tests/conformance/conftest.py: say which engine fixture the backend of "
                                    f"{sorted(unknown)} uses (FLAVOR_ENGINES) or that it needs none (ENGINE_FREE)")
        dry_run = metafunc.definition.originalname == "test_dry_run_matches_the_golden_file"  # never connects
        metafunc.parametrize("flavor", [
            pytest.param(f, marks=() if dry_run or f not in FLAVOR_ENGINES else pytest.mark.xdist_group(FLAVOR_ENGINES[f]))
            for f in flavors])


@pytest.fixture
def backend(flavor: str, request: pytest.FixtureRequest, project) -> Backend:
    """The flavor's backend (a real engine is started once per session) with an operator registered in the stack."""
    b = BACKENDS[flavor](request)
    add_step_operator(b.operator, b.flavor, **b.config)
    return b
