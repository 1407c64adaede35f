"""Vertex AI machine types for custom training, and the choice of one for a step's ResourceSettings.

Pure Python (no SDK), so the pre-flight check, the dry run and the tests use exactly what `submit` sends. The
table is ours, written from Google's "Configure compute resources for custom training" page: Vertex AI itself is
the authority and refuses a combination it does not offer when the job is created.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from conveyor.config.resources import ResourceSettings
from conveyor.exceptions import ResourceUnavailableError

GIB = 2**30


@dataclass(frozen=True)
class MachineType:
    name: str
    vcpus: int
    memory_gib: float
    #: GPUs built into the machine type (a2, g2): (accelerator type, count); None when GPUs are attached (n1)
    built_in_gpus: tuple[str, int] | None = None

    @property
    def family(self) -> str:
        return self.name.split("-", 1)[0]

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * GIB)


def _series(prefix: str, sizes: tuple[int, ...], gib_per_vcpu: float) -> list[MachineType]:
    return [MachineType(f"{prefix}-{n}", n, n * gib_per_vcpu) for n in sizes]


#: every machine type we choose from, smallest first within a family
MACHINE_TYPES: list[MachineType] = [
    *_series("n1-standard", (4, 8, 16, 32, 64, 96), 3.75),
    *_series("n1-highmem", (2, 4, 8, 16, 32, 64, 96), 6.5),
    *_series("n1-highcpu", (16, 32, 64, 96), 0.9),
    *_series("n2-standard", (4, 8, 16, 32, 48, 64, 80), 4.0),
    *_series("n2-highmem", (2, 4, 8, 16, 32, 48, 64, 80), 8.0),
    *_series("n2-highcpu", (16, 32, 64, 80, 96), 1.0),
    MachineType("a2-highgpu-1g", 12, 85, ("NVIDIA_TESLA_A100", 1)),
    MachineType("a2-highgpu-2g", 24, 170, ("NVIDIA_TESLA_A100", 2)),
    MachineType("a2-highgpu-4g", 48, 340, ("NVIDIA_TESLA_A100", 4)),
    MachineType("a2-highgpu-8g", 96, 680, ("NVIDIA_TESLA_A100", 8)),
    MachineType("a2-megagpu-16g", 96, 1360, ("NVIDIA_TESLA_A100", 16)),
    MachineType("a2-ultragpu-1g", 12, 170, ("NVIDIA_A100_80GB", 1)),
    MachineType("a2-ultragpu-2g", 24, 340, ("NVIDIA_A100_80GB", 2)),
    MachineType("a2-ultragpu-4g", 48, 680, ("NVIDIA_A100_80GB", 4)),
    MachineType("a2-ultragpu-8g", 96, 1360, ("NVIDIA_A100_80GB", 8)),
    MachineType("g2-standard-4", 4, 16, ("NVIDIA_L4", 1)),
    MachineType("g2-standard-8", 8, 32, ("NVIDIA_L4", 1)),
    MachineType("g2-standard-12", 12, 48, ("NVIDIA_L4", 1)),
    MachineType("g2-standard-16", 16, 64, ("NVIDIA_L4", 1)),
    MachineType("g2-standard-24", 24, 96, ("NVIDIA_L4", 2)),
    MachineType("g2-standard-32", 32, 128, ("NVIDIA_L4", 1)),
    MachineType("g2-standard-48", 48, 192, ("NVIDIA_L4", 4)),
    MachineType("g2-standard-96", 96, 384, ("NVIDIA_L4", 8)),
]
BY_NAME: dict[str, MachineType] = {m.name: m for m in MACHINE_TYPES}
#: what a step gets when it asks for nothing (the reference system's default)
DEFAULT_MACHINE_TYPE = "n1-standard-4"
#: GPUs attached to n1 machines: accelerator type -> {count: most vCPUs of an n1 machine with that many}
N1_ACCELERATORS: dict[str, dict[int, int]] = {
    "NVIDIA_TESLA_T4": {1: 48, 2: 48, 4: 96},
    "NVIDIA_TESLA_V100": {1: 12, 2: 24, 4: 48, 8: 96},
    "NVIDIA_TESLA_P100": {1: 16, 2: 32, 4: 96},
    "NVIDIA_TESLA_P4": {1: 24, 2: 48, 4: 96},
}
#: the accelerator a gpu_count gets when none is named: the cheapest that n1 machines take
DEFAULT_ACCELERATOR = "NVIDIA_TESLA_T4"
ACCELERATOR_TYPES = frozenset({*N1_ACCELERATORS, "NVIDIA_TESLA_A100", "NVIDIA_A100_80GB", "NVIDIA_L4",
                               "NVIDIA_H100_80GB", "NVIDIA_H100_MEGA_80GB", "NVIDIA_H200_141GB", "NVIDIA_B200",
                               "NVIDIA_GB200", "NVIDIA_RTX_PRO_6000", "NVIDIA_TESLA_K80", "TPU_V2", "TPU_V3",
                               "TPU_V4_POD", "TPU_V5_LITEPOD"})


@dataclass(frozen=True)
class MachineChoice:
    """The machine spec a step runs on, and why."""

    machine_type: str
    accelerator_type: str | None = None
    accelerator_count: int = 0
    #: "settings", "config" (named by the user) or "resources" (chosen from ResourceSettings) or "default"
    source: str = "resources"


def _fits(m: MachineType, r: ResourceSettings) -> bool:
    return ((r.cpu_count is None or m.vcpus + 1e-9 >= r.cpu_count)
            and (r.memory_bytes is None or m.memory_bytes >= r.memory_bytes))


def _n1_gpu_count(accelerator: str, wanted: int) -> int | None:
    """The smallest count Vertex accepts for this n1 accelerator that is at least `wanted`."""
    counts = sorted(N1_ACCELERATORS[accelerator])
    return next((c for c in counts if c >= wanted), None)


def _order(m: MachineType) -> tuple[float, float]:
    return (m.vcpus, m.memory_gib)


def _asks(r: ResourceSettings) -> str:
    parts = []
    if r.cpu_count is not None:
        parts.append(f"cpu_count={r.cpu_count:g}")
    if r.memory is not None:
        parts.append(f"memory={r.memory}")
    if r.gpu_count:
        parts.append(f"gpu_count={r.gpu_count}")
    return ", ".join(parts)


def choose_machine(r: ResourceSettings, *, machine_type: str | None = None, accelerator_type: str | None = None,
                   accelerator_count: int | None = None, source: str = "config", step: str = "") -> MachineChoice:
    """The machine spec for a step: the named machine type when there is one (checked against the request), else
    the smallest of the table that holds cpu_count, memory and gpu_count. Raises ResourceUnavailableError when
    nothing can hold the request, before anything is submitted."""
    who = f"step {step!r}" if step else "the step"
    gpus = r.gpu_count or 0
    if accelerator_count:
        gpus = max(gpus, accelerator_count)
    if accelerator_type is not None and accelerator_type not in ACCELERATOR_TYPES:
        raise ResourceUnavailableError(f"{who}: unknown Vertex AI accelerator_type {accelerator_type!r}; known: "
                                       f"{', '.join(sorted(ACCELERATOR_TYPES))}")
    if machine_type:
        return _check_named(r, machine_type, accelerator_type, gpus, source, who)
    if r.empty and not gpus:
        return MachineChoice(DEFAULT_MACHINE_TYPE, None, 0, "default")
    candidates: list[MachineChoice] = []
    for m in sorted(MACHINE_TYPES, key=_order):
        if not _fits(m, r):
            continue
        if not gpus:
            if m.built_in_gpus is None:
                candidates.append(MachineChoice(m.name, None, 0, "resources"))
            continue
        if m.built_in_gpus is not None:
            kind, count = m.built_in_gpus
            if count >= gpus and accelerator_type in (None, kind):
                candidates.append(MachineChoice(m.name, kind, count, "resources"))
        elif m.family == "n1":
            kind = accelerator_type or DEFAULT_ACCELERATOR
            if kind not in N1_ACCELERATORS:
                continue
            count = _n1_gpu_count(kind, gpus)
            if count is not None and m.vcpus <= N1_ACCELERATORS[kind][count]:
                candidates.append(MachineChoice(m.name, kind, count, "resources"))
    if gpus and not accelerator_type:
        # the default accelerator (n1 + T4) first; a2/g2 machines only when it cannot hold the request
        n1 = [c for c in candidates if c.machine_type.startswith("n1-")]
        candidates = n1 or candidates
    if candidates:
        return candidates[0]
    largest = max(MACHINE_TYPES, key=_order)
    limits = [f"largest: {largest.name} with {largest.vcpus} vCPUs and {max(m.memory_gib for m in MACHINE_TYPES):g} "
              "GiB"]
    if gpus:
        most = max(max(N1_ACCELERATORS[k]) if k in N1_ACCELERATORS else 0 for k in ACCELERATOR_TYPES)
        most = max(most, max(m.built_in_gpus[1] for m in MACHINE_TYPES if m.built_in_gpus))
        limits.append(f"at most {most} GPUs on one machine")
        if accelerator_type:
            limits.append(f"accelerator_type {accelerator_type}")
    raise ResourceUnavailableError(
        f"{who} asks for {_asks(r) or f'{gpus} GPUs'}, which no Vertex AI machine type can hold ({'; '.join(limits)}), "
        "so it is not submitted. Lower the request, or name a machine_type in the step's 'step_operator.vertex' "
        "settings")


def _check_named(r: ResourceSettings, name: str, accelerator_type: str | None, gpus: int, source: str,
                 who: str) -> MachineChoice:
    m = BY_NAME.get(name)
    if m is None:
        # a machine type our table does not know (c2, a3, e2, ...): Vertex checks it when the job is created
        kind = accelerator_type or (DEFAULT_ACCELERATOR if gpus else None)
        return MachineChoice(name, kind, gpus, source)
    short = []
    if r.cpu_count is not None and m.vcpus + 1e-9 < r.cpu_count:
        short.append(f"cpu_count={r.cpu_count:g} (it has {m.vcpus} vCPUs)")
    if r.memory_bytes is not None and m.memory_bytes < r.memory_bytes:
        short.append(f"memory={r.memory} (it has {m.memory_gib:g} GiB)")
    if m.built_in_gpus is not None:
        kind, count = m.built_in_gpus
        if accelerator_type not in (None, kind):
            short.append(f"accelerator_type={accelerator_type} (it comes with {kind})")
        if gpus > count:
            short.append(f"gpu_count={gpus} (it comes with {count} {kind})")
        if short:
            raise _refuse(who, name, short)
        return MachineChoice(name, kind, count, source)
    if gpus:
        kind = accelerator_type or DEFAULT_ACCELERATOR
        if m.family != "n1":
            short.append(f"gpu_count={gpus} ({m.family} machines take no GPUs: use n1, a2 or g2)")
        elif kind not in N1_ACCELERATORS:
            short.append(f"accelerator_type={kind} (n1 machines take {', '.join(sorted(N1_ACCELERATORS))})")
        else:
            count = _n1_gpu_count(kind, gpus)
            if count is None:
                short.append(f"gpu_count={gpus} (an n1 machine takes at most {max(N1_ACCELERATORS[kind])} {kind})")
            elif m.vcpus > N1_ACCELERATORS[kind][count]:
                short.append(f"{count} {kind} (an n1 machine with {count} of them has at most "
                             f"{N1_ACCELERATORS[kind][count]} vCPUs; {name} has {m.vcpus})")
            else:
                if short:
                    raise _refuse(who, name, short)
                return MachineChoice(name, kind, count, source)
    if short:
        raise _refuse(who, name, short)
    return MachineChoice(name, None, 0, source)


def _refuse(who: str, name: str, short: list[str]) -> ResourceUnavailableError:
    return ResourceUnavailableError(
        f"{who} asks for {', '.join(short)}, more than machine_type {name} offers, so it is not submitted: name a "
        "bigger machine_type, or leave machine_type unset to have one chosen from ResourceSettings")


def threads_for(cpu_count: float | None) -> str | None:
    """OMP_NUM_THREADS for a step that asked for `cpu_count` CPUs (the machine may have more)."""
    return None if cpu_count is None else str(max(1, math.floor(cpu_count)))
