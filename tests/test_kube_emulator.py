"""The test-side kubelet of tests/fixtures/kube_emulator.py: a container that vanishes never leaves it spinning."""

from __future__ import annotations

import secrets
import time
from typing import Any, Callable

import pytest


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout:g}s"
        time.sleep(0.1)


@pytest.mark.slow
def test_a_container_removed_under_a_running_pod_fails_the_pod_and_ends_its_worker(kube_cluster: Any,
                                                                                 podman_engine: Any) -> None:
    """Its worker once waited on the removed container for good: each instant 404 was taken for "still running",
    so the pod stayed Running and the thread spun, starving the emulator's API of the GIL (the flaky
    `run stop [kubernetes]` conformance case: a pod deleted while its worker stopped the same container)."""
    name = f"vanish-{secrets.token_hex(3)}"
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
           "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
               {"name": "step", "image": podman_engine.base_image,
                "command": ["python3", "-c", "import time; time.sleep(300)"]}]}}}}
    kubelet = kube_cluster.kubelet
    kubelet.http.post(f"{kube_cluster.url}/apis/batch/v1/namespaces/default/jobs", json=job,
                      timeout=10).raise_for_status()

    def run() -> Any:
        return next((r for r in kube_cluster.runs.values() if r.job == name), None)

    _wait(lambda: run() is not None and run().container is not None, "the pod's container to start")
    pod = run().pod
    worker = kubelet._workers[f"_run_pod:{pod}"]
    podman_engine.client().containers.get(run().container).remove(force=True)

    def phase() -> str | None:
        found = [p for p in kube_cluster.pods() if p["metadata"]["name"] == pod]
        return (found[0].get("status") or {}).get("phase") if found else None

    _wait(lambda: phase() == "Failed", "the pod to fail")
    _wait(lambda: not worker.is_alive(), "the kubelet's pod worker to end")
    assert run().exit_code == 137
    failed = [c for j in kube_cluster.jobs() if j["metadata"]["name"] == name
              for c in (j.get("status") or {}).get("conditions") or [] if c["type"] == "Failed"]
    assert failed, kube_cluster.jobs()
