"""Turning a pipeline call into an immutable snapshot: steps, edges, merged settings, code references."""

from __future__ import annotations

import contextvars
import hashlib
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from conveyor.config.merge import merge_settings
from conveyor.config.names import check_name
from conveyor.exceptions import PipelineDefinitionError
from conveyor.materializer_types import type_path
from conveyor.pipelines.code_fingerprint import code_fingerprint
from conveyor.pipelines.source import code_hash, step_source
from conveyor.artifacts.registry import default_artifact_name
from conveyor.steps.hooks import hook_sources, step_hooks

if TYPE_CHECKING:
    from conveyor.config.run_config import StepRunConfig
    from conveyor.steps.step import Step

SNAPSHOT_VERSION = 1
_active: contextvars.ContextVar["Compilation | None"] = contextvars.ContextVar("conveyor_compilation", default=None)


def active_compilation() -> "Compilation | None":
    return _active.get()


@dataclass(frozen=True)
class StepOutput:
    """A handle to one output of one invocation; pass it to another step to make an edge."""

    compilation: "Compilation"
    invocation: str
    output: str

    def __repr__(self) -> str:
        return f"<output {self.invocation}.{self.output}>"

    def __iter__(self) -> Any:
        raise PipelineDefinitionError(f"step {self.invocation!r} has a single output {self.output!r}; "
                                      "declare a tuple of Annotated outputs to unpack several")


@dataclass(frozen=True)
class InvocationHandle:
    """Returned by a step without outputs; usable in `after=`."""

    compilation: "Compilation"
    invocation: str


@dataclass
class Invocation:
    name: str
    step: "Step"
    parameters: dict[str, Any]
    inputs: dict[str, tuple[str, str]]
    after: list[str]


def is_jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


class Compilation:
    def __init__(self, pipeline_name: str, step_configs: "Mapping[str, StepRunConfig] | None" = None) -> None:
        self.pipeline_name = pipeline_name
        self.invocations: dict[str, Invocation] = {}
        #: per-step options by step name (run config `steps:`, `with_options(steps=...)`), applied at each call
        self.step_configs = dict(step_configs or {})
        self._next_suffix: dict[str, int] = {}

    def _unique_name(self, base: str) -> str:
        if base not in self.invocations:
            return base
        i = self._next_suffix.get(base, 2)  # where the last search for this base stopped: a fan-out is linear
        while f"{base}_{i}" in self.invocations:
            i += 1
        self._next_suffix[base] = i + 1
        return f"{base}_{i}"

    def _after_names(self, after: Any, where: str) -> list[str]:
        if after is None:
            return []
        items = after if isinstance(after, (list, tuple)) else [after]
        names = []
        for item in items:
            if isinstance(item, (StepOutput, InvocationHandle)):
                names.append(item.invocation)
            elif isinstance(item, str):
                names.append(item)
            elif hasattr(item, "name") and hasattr(item, "entrypoint"):
                names.append(item.name)
            else:
                raise PipelineDefinitionError(f"{where}: `after` takes step names or step outputs, got {item!r}")
        return names

    def add_invocation(self, step: "Step", args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        invocation_id = kwargs.pop("id", None)
        after = kwargs.pop("after", None)
        if invocation_id is None:  # the step's name, numbered from the second call on, may outgrow the limit
            name = check_name("step", self._unique_name(step.name), where=f"pipeline {self.pipeline_name!r}")
        else:
            name = check_name("step id", invocation_id, where=f"pipeline {self.pipeline_name!r}, step {step.name!r} (id=)")
        where = f"pipeline {self.pipeline_name!r}, step {name!r}"
        if name in self.invocations:
            raise PipelineDefinitionError(f"{where}: two steps are named {name!r}; give one another `id=`")
        if name in self.step_configs:
            from conveyor.config.run_config import step_options

            step = step.with_options(**step_options(self.step_configs[name]))
        try:
            bound = step.signature.bind_partial(*args, **kwargs)
        except TypeError as err:
            raise PipelineDefinitionError(f"{where}: {err}") from None
        _bind_configured(step.parameters, bound.arguments, where)
        parameters: dict[str, Any] = {}
        inputs: dict[str, tuple[str, str]] = {}
        for pname, param in step.signature.parameters.items():
            if pname not in bound.arguments:
                if param.default is param.empty:
                    raise PipelineDefinitionError(
                        f"{where}: input {pname!r} is not connected: pass it an output of another step or a value")
                continue
            value = bound.arguments[pname]
            if isinstance(value, StepOutput):
                if value.compilation is not self:
                    raise PipelineDefinitionError(f"{where}: input {pname!r} comes from another pipeline's step")
                inputs[pname] = (value.invocation, value.output)
            elif isinstance(value, InvocationHandle):
                raise PipelineDefinitionError(f"{where}: input {pname!r} is given step {value.invocation!r}, which has no outputs")
            elif is_jsonable(value):
                from conveyor.pipelines.parameters import validated_parameter

                parameters[pname] = validated_parameter(value, step.input_types.get(pname, Any), where, pname)
            else:
                raise PipelineDefinitionError(
                    f"{where}: parameter {pname!r} of type {type(value).__name__} is not JSON-serializable; "
                    "produce it in a step and pass that step's output instead")
        self.invocations[name] = Invocation(name, step, parameters, inputs, self._after_names(after, where))
        handles = tuple(StepOutput(self, name, o.name) for o in step.outputs)
        if not handles:
            return InvocationHandle(self, name)
        return handles[0] if len(handles) == 1 else handles


def _bind_configured(configured: Mapping[str, Any], arguments: dict[str, Any], where: str) -> None:
    """Configured parameters fill the arguments the call left out; one the call also passes must agree (ZenML)."""
    for pname, value in configured.items():
        if pname not in arguments:
            arguments[pname] = value
            continue
        given = arguments[pname]
        if isinstance(given, (StepOutput, InvocationHandle)):
            raise PipelineDefinitionError(
                f"{where}: parameter {pname!r} is configured (with_options or the run config's steps.<name>."
                f"parameters) but the pipeline connects it to step {given.invocation!r}'s output: remove it from "
                "the configuration")
        if given != value:
            raise PipelineDefinitionError(
                f"{where}: configured parameter {pname}={value!r} (with_options or the run config's "
                f"steps.<name>.parameters) conflicts with {pname}={given!r} passed in the pipeline's code: "
                "set it in one place only")


def topological_order(pipeline: str, upstream: Mapping[str, Iterable[str]]) -> list[str]:
    """Kahn's algorithm in definition order; a cycle is reported as the path that closes it."""
    for node, ups in upstream.items():
        for u in ups:
            if u not in upstream:
                raise PipelineDefinitionError(f"pipeline {pipeline!r}: step {node!r} runs after unknown step {u!r}")
    # levels in one pass over the edges (a chain of 1,000 steps costs 1,000 steps, not a million set updates);
    # the order is by level, then definition order within a level
    index = {n: i for i, n in enumerate(upstream)}
    downstream: dict[str, list[str]] = {n: [] for n in upstream}
    missing = {n: len(set(ups)) for n, ups in upstream.items()}
    for n, ups in upstream.items():
        for u in set(ups):
            downstream[u].append(n)
    level = {n: 0 for n, count in missing.items() if count == 0}  # steps whose place is known
    reached: dict[str, int] = {}
    frontier = list(level)
    while frontier:
        node = frontier.pop()
        for d in downstream[node]:
            reached[d] = max(reached.get(d, 0), level[node] + 1)
            missing[d] -= 1
            if missing[d] == 0:
                level[d] = reached[d]
                frontier.append(d)
    order = sorted(level, key=lambda n: (level[n], index[n]))
    remaining = {n: set(ups) - level.keys() for n, ups in upstream.items() if n not in level}
    if remaining:
        start = next(iter(remaining))
        path, node = [start], start
        while True:
            node = sorted(remaining[node])[0]
            if node in path:
                cycle = list(reversed(path[path.index(node):] + [node]))  # in the direction data flows
                raise PipelineDefinitionError(f"pipeline {pipeline!r} has a cycle: {' -> '.join(cycle)}")
            path.append(node)
    return order


@dataclass(frozen=True)
class Snapshot:
    """What a pipeline call compiled to; `spec` is what the store keeps and the remote side reads."""

    pipeline_name: str
    spec: Mapping[str, Any]
    spec_hash: str
    order: tuple[str, ...]
    steps: Mapping[str, "Step"] = field(repr=False)

    def step_spec(self, name: str) -> Mapping[str, Any]:
        return self.spec["steps"][name]


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def build_snapshot(compilation: Compilation, *, pipeline_settings: dict[str, dict[str, Any]],
                   pipeline_enable_cache: bool | None, parameters: dict[str, Any]) -> Snapshot:
    name = compilation.pipeline_name
    if not compilation.invocations:
        raise PipelineDefinitionError(f"pipeline {name!r} has no steps: call at least one step inside it")
    upstream = {n: list(dict.fromkeys([u for u, _ in inv.inputs.values()] + inv.after))
                for n, inv in compilation.invocations.items()}
    order = topological_order(name, upstream)
    steps_spec: dict[str, Any] = {}
    code: dict[int, tuple[dict[str, Any], str, str]] = {}  # one step called many times is read once
    for n in order:
        inv = compilation.invocations[n]
        s = inv.step
        enable_cache = s.enable_cache if s.enable_cache is not None else pipeline_enable_cache
        if id(s) not in code:
            source = step_source(s)
            # what the cache key knows of the code besides the function: see pipelines/code_fingerprint.py
            code[id(s)] = (source, code_hash(s.entrypoint), code_fingerprint(s.entrypoint, source.get("code_root")))
        source, hashed, fingerprint = code[id(s)]
        steps_spec[n] = {
            "step": s.name,
            "source": dict(source),
            "code_hash": hashed,
            "code_fingerprint": fingerprint,
            "cache_version": s.cache_version,
            "parameters": inv.parameters,
            "inputs": {arg: {"step": u, "output": o} for arg, (u, o) in inv.inputs.items()},
            "input_types": {arg: type_path(s.input_types.get(arg)) for arg in inv.inputs},
            "outputs": {o.name: type_path(o.type) for o in s.outputs},
            # the artifact each output is a version of (conveyor.artifacts.registry)
            "artifact_names": {o.name: o.name if o.named else default_artifact_name(name, n, o.name) for o in s.outputs},
            "upstream": upstream[n],
            "settings": merge_settings(pipeline_settings, s.settings),
            "step_operator": s.step_operator,
            "enable_cache": True if enable_cache is None else enable_cache,
            "retry": s.retry.model_dump() if s.retry else None,
            "timeout": s.timeout,
        }
        hooks = step_hooks(s)
        if hooks:  # how the step's process finds them, like the step's function
            steps_spec[n]["hooks"] = hook_sources(s, hooks)
    spec = {"version": SNAPSHOT_VERSION, "pipeline": name, "parameters": parameters,
            "settings": pipeline_settings, "order": order, "steps": steps_spec}
    spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()
    return Snapshot(name, _freeze(spec), spec_hash, tuple(order),
                    MappingProxyType({n: compilation.invocations[n].step for n in order}))


class StoredStep:
    """A step known only from a stored snapshot (resume): its function is imported on first use."""

    def __init__(self, source: Mapping[str, Any]) -> None:
        self._source = thaw(source)
        self._entrypoint: Any = None

    @property
    def entrypoint(self) -> Any:
        if self._entrypoint is None:
            from conveyor.pipelines.source import load_step_function

            self._entrypoint = load_step_function(self._source)
        return self._entrypoint


def snapshot_from_spec(spec: Mapping[str, Any], spec_hash: str) -> Snapshot:
    """The snapshot a stored run was compiled to, without the pipeline's source code at hand."""
    frozen = _freeze(thaw(spec))
    order = tuple(frozen["order"])
    return Snapshot(frozen["pipeline"], frozen, spec_hash, order,
                    MappingProxyType({n: StoredStep(frozen["steps"][n]["source"]) for n in order}))


def thaw(value: Any) -> Any:
    """A plain JSON-able copy of a frozen spec."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value
