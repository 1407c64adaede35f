"""The conformance suite runs every test against every step operator flavor (as dlt tests every destination)."""

from __future__ import annotations

import pytest
from backends import BACKENDS, CAPABILITIES, Backend

from conveyor.config.base import validate_strict
from conveyor.context import get_context


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(capability): only for flavors whose backend has that capability")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `needs(x)` is generated only for flavors with capability x: not a skip, simply not a case."""
    if "flavor" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("needs")
        wanted = set(marker.args) if marker else set()
        metafunc.parametrize("flavor", [f for f in BACKENDS if wanted <= CAPABILITIES[f]])


@pytest.fixture
def backend(flavor: str, request: pytest.FixtureRequest, project) -> Backend:
    """The flavor's backend (a real engine is started once per session) with an operator registered in the stack."""
    b = BACKENDS[flavor](request)
    register(b.operator, b.flavor, b.config)
    return b


def register(name: str, flavor: str, config: dict) -> None:
    ctx = get_context()
    ctx.ensure_defaults()
    cfg = validate_strict(ctx.registry.get("step_operator", flavor).config_class, dict(config), name)
    data = cfg.model_dump(exclude_unset=True, mode="json")
    if ctx.store.get_component("step_operator", name):
        ctx.store.update_component("step_operator", name, data)
        return
    cid = ctx.store.create_component("step_operator", name, flavor, data)
    record = ctx.store.get_stack("default")
    ctx.store.set_stack_components("default", [c["id"] for c in record["components"]] + [cid])
