"""Finding a pipeline object from the shell (`conveyor pipeline run SOURCE`).

SOURCE is ZenML's `package.module.pipeline_name`, or `module:attr`, or `path/to/file.py:attr`. The module is
imported with pipeline runs prevented (`run_guard`): a script that calls its pipeline at module level stops
there instead of running it, and keeps what it defined up to the call, the pipeline object included.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ConfigError

if TYPE_CHECKING:
    from conveyor.pipelines.pipeline import Pipeline

__all__ = ["load_pipeline", "split_source"]

_FORMS = "package.module.pipeline_name, module:attr or path/to/file.py:attr"


def split_source(source: str) -> tuple[str, str, Path | None]:
    """(module name, attribute path, directory to import a file path from) of a SOURCE."""
    if ":" in source:
        module, _, attr = source.rpartition(":")
    else:
        module, _, attr = source.rpartition(".")
    if not module or not attr:
        raise ConfigError(f"cannot read pipeline source {source!r}: write it as {_FORMS}")
    if module.endswith(".py") or os.sep in module or "/" in module:
        path = Path(module)
        if path.suffix != ".py":
            raise ConfigError(f"pipeline source {source!r}: a file path must name a .py file ({_FORMS})")
        if not path.is_file():
            raise ConfigError(f"pipeline source {source!r}: no file {str(path)!r} (relative to {Path.cwd()})")
        return path.stem, attr, path.resolve().parent
    return module, attr, None


def load_pipeline(source: str) -> "Pipeline":
    """The `@pipeline` object SOURCE names; its module imported as user code (see module doc)."""
    from conveyor.pipelines.main_script import import_user_module
    from conveyor.pipelines.pipeline import Pipeline

    module_name, attr, directory = split_source(source)
    root = str(directory) if directory is not None else os.getcwd()  # `conveyor`'s sys.path lacks the cwd
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        obj: Any = import_user_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise ConfigError(f"pipeline source {source!r}: no module {module_name!r} importable from {root} "
                              f"(write SOURCE as {_FORMS}, run from the project's directory)") from None
        raise
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"pipeline source {source!r}: module {module_name!r} has no {attr!r} (defined under "
                              '`if __name__ == "__main__":` or after the pipeline call? define it at module level)') \
                from None
    if not isinstance(obj, Pipeline):
        raise ConfigError(f"pipeline source {source!r} names a {type(obj).__name__}, not a @pipeline")
    return obj
