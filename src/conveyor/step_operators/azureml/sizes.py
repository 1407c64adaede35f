"""Serverless VM sizes a step can get from `ResourceSettings`: the smallest documented size that fits.

Pure Python. Figures are Azure's published specifications (vCPUs, memory in GiB, GPUs) of sizes Azure ML
serverless compute offers; a workspace's quota decides which it may actually use.
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.config.resources import ResourceSettings
from conveyor.exceptions import ResourceUnavailableError

GIB = 2**30


@dataclass(frozen=True)
class VMSize:
    name: str
    vcpus: int
    memory_gib: float
    gpus: int = 0
    gpu: str = ""

    def fits(self, resources: ResourceSettings) -> bool:
        return ((resources.cpu_count or 0) <= self.vcpus
                and (resources.memory_bytes or 0) <= self.memory_gib * GIB
                and (resources.gpu_count or 0) <= self.gpus)


#: ordered cheapest first within each kind: CPU sizes, then GPU sizes
VM_SIZES: tuple[VMSize, ...] = (
    VMSize("Standard_DS2_v2", 2, 7),
    VMSize("Standard_DS3_v2", 4, 14),
    VMSize("Standard_E4s_v3", 4, 32),
    VMSize("Standard_DS4_v2", 8, 28),
    VMSize("Standard_E8s_v3", 8, 64),
    VMSize("Standard_DS5_v2", 16, 56),
    VMSize("Standard_E16s_v3", 16, 128),
    VMSize("Standard_E32s_v3", 32, 256),
    VMSize("Standard_E64s_v3", 64, 432),
    VMSize("Standard_NC4as_T4_v3", 4, 28, 1, "T4"),
    VMSize("Standard_NC8as_T4_v3", 8, 56, 1, "T4"),
    VMSize("Standard_NC16as_T4_v3", 16, 110, 1, "T4"),
    VMSize("Standard_NC24ads_A100_v4", 24, 220, 1, "A100 80GB"),
    VMSize("Standard_NC48ads_A100_v4", 48, 440, 2, "A100 80GB"),
    VMSize("Standard_NC64as_T4_v3", 64, 440, 4, "T4"),
    VMSize("Standard_NC96ads_A100_v4", 96, 880, 4, "A100 80GB"),
    VMSize("Standard_ND96asr_v4", 96, 900, 8, "A100 40GB"),
    VMSize("Standard_ND96amsr_A100_v4", 96, 1900, 8, "A100 80GB"),
)
BY_NAME = {s.name.lower(): s for s in VM_SIZES}


def describe(resources: ResourceSettings) -> str:
    parts = [f"{k}={v}" for k, v in resources.model_dump(exclude_none=True).items()]
    return ", ".join(parts) or "no resources"


def choose_vm_size(resources: ResourceSettings) -> VMSize:
    """The first size of the table that holds the request (a CPU-only request never gets a GPU size)."""
    wanted_gpu = bool(resources.gpu_count)
    for size in VM_SIZES:
        if bool(size.gpus) == wanted_gpu and size.fits(resources):
            return size
    biggest = max(VM_SIZES, key=lambda s: (s.gpus, s.vcpus, s.memory_gib))
    raise ResourceUnavailableError(
        f"no Azure ML serverless VM size holds {describe(resources)} (largest: {biggest.name}, {biggest.vcpus} vCPUs, "
        f"{biggest.memory_gib:g} GiB, {biggest.gpus} GPUs); lower the request or spread the work over instance_count "
        "nodes")


def check_size(name: str, resources: ResourceSettings, where: str) -> None:
    """Refuse a request the named size cannot hold; a size not in the table is left to Azure to judge."""
    size = BY_NAME.get(name.lower())
    if size is not None and not size.fits(resources):
        raise ResourceUnavailableError(
            f"{where} {size.name} ({size.vcpus} vCPUs, {size.memory_gib:g} GiB, {size.gpus} GPUs) cannot hold "
            f"{describe(resources)}: choose a bigger instance_type, or leave it out to have one chosen")
