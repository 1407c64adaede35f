"""The container registry section of the benchmark (issue 17): the pre-flight of a container step whose image the
stack's registry already has, target < 200 ms.

tests/fixtures/registry.py's throw-away `docker-registry` runs on 127.0.0.1. The image is put there under the step's
content tag through the registry's own HTTP API (a config blob and a manifest: no engine needed, and the pre-flight
never looks inside it), then a fresh process runs what `conveyor.execution.run.preflight` runs for the step on a
`kubernetes` step operator with that registry (`operator.prepare_step`: render the Dockerfile and context, hash them,
one manifest HEAD) and times it, once to warm up and then `runs` times. Run on its own too:

    .venv/bin/python bench/registry_preflight.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import sys
import urllib.request
from typing import Any, Callable

from common import HERE, PYTHON, Row
from common import env_for as _env
from common import project as _project
from common import run as _run

__all__ = ["measure_registry", "registry_rows", "registry_unavailable"]

TARGET_S = 0.200
BINARY = "/usr/bin/docker-registry"

MEASURE = r"""
import json, sys, time
from conveyor import pipeline, step
from conveyor.context import get_context
from conveyor.execution.launcher import build_step_info

host, runs = sys.argv[1], int(sys.argv[2])
ctx = get_context()
ctx.ensure_defaults()
kubeconfig = ctx.root / "kubeconfig"
kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
if ctx.store.get_component("step_operator", "k8s") is None:
    op = ctx.store.create_component("step_operator", "k8s", "kubernetes", {
        "kubeconfig": str(kubeconfig), "check_node_resources": False, "docker_settings": {"parent_image": "debian:12"}})
    reg = ctx.store.create_component("container_registry", "images", "default",
                                     {"uri": f"{host}/bench", "insecure": True})
    ids = [c["id"] for c in ctx.store.get_stack("default")["components"]]
    ctx.store.set_stack_components("default", ids + [op, reg])

@step(step_operator="k8s")
def train() -> int:
    return 1

@pipeline
def p():
    train()

snapshot = p.compile()
stack = ctx.load_stack()
operator = stack.step_operator("k8s")
info = build_step_info(stack, snapshot, "train", operator, run_id="preflight", run_name="preflight",
                       step_run_id="preflight", attempt=1, attempt_uri="")
root = stack.artifact_store.artifact_store().root
plan = operator.image_plan(info, store_root=root)
if sys.argv[3] == "tag":
    print(plan.tag.rsplit(":", 1)[1])
    sys.exit(0)
samples = []
for _ in range(runs + 1):
    t0 = time.perf_counter()
    operator.prepare_step(info, store_root=root, code_root=None)
    samples.append(time.perf_counter() - t0)
print(json.dumps(samples[1:]))
"""


def registry_unavailable() -> str | None:
    if not os.path.exists(BINARY):
        return "docker-registry not installed (bash scripts/install-system-deps.sh)"
    import importlib.util

    for module in ("pytest", "kubernetes"):
        if importlib.util.find_spec(module) is None:
            return f"the registry section needs {module}: pip install -e '.[dev]'"
    return None


def _put_image(base_url: str, repository: str, tag: str) -> None:
    """A minimal image (a config blob, no layers) under `tag`, through the registry's upload API."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    start = urllib.request.Request(f"{base_url}/v2/{repository}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(start, timeout=30) as response:
        location = response.headers["Location"]
    location = location if location.startswith("http") else base_url + location
    sep = "&" if "?" in location else "?"
    upload = urllib.request.Request(f"{location}{sep}digest={digest}", data=config, method="PUT",
                                    headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(upload, timeout=30).close()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest,
                                      "size": len(config)}, "layers": []}).encode()
    put = urllib.request.Request(f"{base_url}/v2/{repository}/manifests/{tag}", data=manifest, method="PUT",
                                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    urllib.request.urlopen(put, timeout=30).close()


def measure_registry(runs: int, say: Callable[[str], None]) -> dict[str, Any]:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from fixtures.registry import start_registry

    server = start_registry()
    root = _project()
    try:
        script = root / "measure.py"
        script.write_text(MEASURE)
        project = root / "project"
        project.mkdir()
        env = _env(project)
        tag = _run([PYTHON, str(script), server.host, "0", "tag"], env, cwd=project).stdout.strip().splitlines()[-1]
        _put_image(server.url, "bench/conveyor-step", tag)
        say(f"registry section: {server.host} has bench/conveyor-step:{tag}; timing the pre-flight")
        samples = json.loads(_run([PYTHON, str(script), server.host, str(runs), "time"], env,
                                  cwd=project).stdout.strip().splitlines()[-1])
        manifest_puts = sum(1 for line in server.log_path.read_text(errors="replace").splitlines()
                            if "PUT /v2/" in line and "/manifests/" in line)
        return {"samples": samples, "manifest_puts": manifest_puts}
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def registry_rows(data: dict[str, Any] | None, skipped: str | None) -> list[Row]:
    metric = "pre-flight of an up-to-date image (registry has it)"
    if data is None:
        return [Row(metric, None, TARGET_S, None, note=skipped or "")]
    samples = data["samples"]
    note = "hash the image spec + 1 manifest HEAD; " + (
        "nothing pushed" if data["manifest_puts"] == 1 else f"{data['manifest_puts'] - 1} unexpected push(es)")
    return [Row(metric, statistics.median(samples), TARGET_S, None, note=note, low=min(samples), high=max(samples))]


if __name__ == "__main__":
    result = measure_registry(5, lambda msg: print(msg, file=sys.stderr))
    for row in registry_rows(result, None):
        print(f"{row.metric}: {row.measured * 1000:.0f} ms (min {row.low * 1000:.0f}, max {row.high * 1000:.0f}; "
              f"target {TARGET_S * 1000:.0f} ms) {row.verdict} - {row.note}")
