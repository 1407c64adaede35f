"""Layers point one way: no module of `src/conveyor` imports from a layer above its own.

Every import counts: at module level, inside functions (lazy imports), and under `TYPE_CHECKING` (a type named
from above is a dependency on what is above). The order is the one docs/architecture.md ("Layers") describes;
a module belongs to the layer of the longest prefix below that names it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import conveyor

SRC = Path(conveyor.__file__).parent

#: bottom first. Within a layer modules may import each other; across layers, only downwards.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("conveyor.exceptions", "conveyor.enums", "conveyor.utils", "conveyor.integrations",
                    # the `{{name.key}}` syntax, text only: config checks that settings hold no reference
                    "conveyor.secrets.references")),
    ("config", ("conveyor.config",)),
    ("store", ("conveyor.store",)),
    ("resources", ("conveyor.secrets", "conveyor.artifacts.store", "conveyor.artifacts.code_archive",
                   "conveyor.artifacts.layout", "conveyor.images.settings", "conveyor.stack.component",
                   "conveyor.stack.component_config", "conveyor.stack.config_model", "conveyor.stack.flavor",
                   "conveyor.stack.flavor_description", "conveyor.stack.lifecycle", "conveyor.stack.registry")),
    ("contracts", ("conveyor.step_operators.base", "conveyor.step_operators.info", "conveyor.step_operators.polling",
                   "conveyor.step_operators.entrypoint", "conveyor.orchestrators.base",
                   "conveyor.orchestrators.base_config", "conveyor.artifact_stores.base",
                   "conveyor.artifact_stores.base_config", "conveyor.stack.stack", "conveyor.context",
                   "conveyor.container_registries.base", "conveyor.container_registries.config")),
    ("images", ("conveyor.images",)),
    ("definitions", ("conveyor.artifacts", "conveyor.materializer_types", "conveyor.metadata", "conveyor.steps",
                     "conveyor.pipelines.code_fingerprint", "conveyor.pipelines.compiler",
                     "conveyor.pipelines.main_script", "conveyor.pipelines.parameters", "conveyor.pipelines.run_guard",
                     "conveyor.pipelines.source")),
    ("execution", ("conveyor.execution",)),
    ("remote", ("conveyor.entrypoints",)),
    ("flavors", ("conveyor.step_operators", "conveyor.orchestrators", "conveyor.artifact_stores",
                 "conveyor.container_registries")),
    ("client", ("conveyor.client", "conveyor.pipelines", "conveyor.artifacts.by_name")),
    ("package", ("conveyor",)),
    ("dashboard", ("conveyor.dashboard",)),  # a front end: reads and acts through the client, as the CLI does
    ("cli", ("conveyor.cli",)),
]

#: (importer, imported module) pairs allowed upwards, each with its reason. Kept empty on purpose.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    assert rank >= 0, f"module {module} is in no layer: add it to LAYERS"
    return rank


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """(module imported, line) for every import of ours in the file, wherever it stands."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from conveyor.x import y` may import the submodule conveyor.x.y
            found += [(f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target, node.lineno)
                      for a in node.names]
    return [(target, line) for target, line in found if target == "conveyor" or target.startswith("conveyor.")]


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (SRC / relative).with_suffix(".py").exists() or (SRC / relative / "__init__.py").exists()


def upward_imports() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        importer = module_name(path)
        for target, line in imports(path):
            if layer_of(target) > layer_of(importer) and (importer, target) not in EXCEPTIONS:
                found.append(f"{path.relative_to(SRC.parent)}:{line}: {importer} ({LAYERS[layer_of(importer)][0]}) "
                             f"imports {target} ({LAYERS[layer_of(target)][0]})")
    return found


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    found = upward_imports()
    assert not found, "upward imports (see docs/architecture.md, Layers):\n" + "\n".join(found)


def test_every_module_has_a_layer_and_every_exception_is_still_needed() -> None:
    for path in SRC.rglob("*.py"):
        layer_of(module_name(path))
    for (importer, target), reason in EXCEPTIONS.items():
        assert reason and layer_of(target) > layer_of(importer), f"exception {importer} -> {target} is not upward"


def test_the_checker_sees_lazy_and_type_only_imports(tmp_path: Path) -> None:
    """The walk finds imports inside functions and under TYPE_CHECKING, not only at the top."""
    probe = SRC / "config" / "base.py"
    found = {target for target, _ in imports(probe)}
    assert "conveyor.exceptions" in found  # imported inside a function there
    assert layer_of("conveyor.cli.run") > layer_of("conveyor.client") > layer_of("conveyor.execution.steering")
    assert layer_of("conveyor.execution.run") > layer_of("conveyor.config.settings")
