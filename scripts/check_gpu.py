"""Check the `local` step operator's GPU handling on a machine that has GPUs (not part of the test suite).

    python scripts/check_gpu.py

Runs real pipelines and prints what each step saw: CUDA_VISIBLE_DEVICES, the GPU PyTorch finds (if installed),
and nvidia-smi's view; then checks that asking for more GPUs than the machine has is refused before anything runs,
that gpu_count=0 hides the GPUs, and that two one-GPU steps on a one-GPU machine take turns.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from typing import Annotated

os.environ.setdefault("CONVEYOR_PROJECT_DIR", tempfile.mkdtemp(prefix="conveyor-gpu-"))

from conveyor import pipeline, step  # noqa: E402
from conveyor.config import ResourceSettings  # noqa: E402
from conveyor.exceptions import ResourceUnavailableError, RunFailedError  # noqa: E402


def gpus_on_machine() -> list[str]:
    out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,name", "--format=csv,noheader"],
                         capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


@step(step_operator="local", settings={"resources": ResourceSettings(gpu_count=1)})
def one_gpu(hold: float = 0.0) -> tuple[Annotated[str, "visible"], Annotated[str, "torch"], Annotated[float, "start"],
                                        Annotated[float, "end"]]:
    start = time.time()
    seen = "torch not installed"
    try:
        import torch

        seen = f"{torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() \
            else "torch sees no GPU"
        if torch.cuda.is_available():
            x = torch.ones(1024, 1024, device="cuda")
            seen += f"; matmul sum={float((x @ x).sum()):.0f}"
    except ImportError:
        pass
    time.sleep(hold)
    return os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"), seen, start, time.time()


@step(step_operator="local", settings={"resources": ResourceSettings(gpu_count=0)})
def no_gpu() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")


@pipeline(enable_cache=False)
def gpu_pipeline():
    one_gpu()
    no_gpu()


@pipeline(enable_cache=False)
def two_gpu_steps():
    one_gpu(hold=3.0, id="first")
    one_gpu(hold=3.0, id="second")


def main() -> int:
    gpus = gpus_on_machine()
    print("nvidia-smi:", *gpus, sep="\n  ")
    run = gpu_pipeline()
    s = run.steps["one_gpu"]
    print("gpu_count=1 -> CUDA_VISIBLE_DEVICES =", s.outputs["visible"].load(), "|", s.outputs["torch"].load())
    print("gpu_count=0 -> CUDA_VISIBLE_DEVICES =", repr(run.steps["no_gpu"].outputs["output"].load()))

    too_many = one_gpu.with_options(settings={"resources": {"gpu_count": len(gpus) + 1}})

    @pipeline(enable_cache=False)
    def greedy():
        too_many()

    try:
        greedy()
        print("ERROR: a request for more GPUs than the machine has was not refused")
        return 1
    except ResourceUnavailableError as err:
        print("gpu_count=%d refused before running:" % (len(gpus) + 1), err)

    if len(gpus) == 1:
        run = two_gpu_steps()
        a, b = run.steps["first"], run.steps["second"]
        spans = sorted([(a.outputs["start"].load(), a.outputs["end"].load()), (b.outputs["start"].load(), b.outputs["end"].load())])
        overlap = spans[0][1] > spans[1][0]
        print("two gpu_count=1 steps on a 1-GPU machine:", "OVERLAPPED (wrong)" if overlap else "took turns (right)",
              [a.outputs["visible"].load(), b.outputs["visible"].load()])
        if overlap:
            return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RunFailedError as err:
        print(err)
        sys.exit(1)
