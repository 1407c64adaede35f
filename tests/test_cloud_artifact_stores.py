"""One suite for the remote artifact stores, each against a server the suite starts on 127.0.0.1 and the real
client library: `s3` (moto's server, s3fs), `gcs` (fake-gcs-server, gcsfs), `azure` (Azurite, adlfs).

What the emulators cannot show is listed in docs/artifact_stores/{s3,gcs,azure}.md: real auth (IAM, OAuth,
Entra ID), eventual consistency, quotas, a region's latency.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel

from conveyor.artifacts.materializers import load_artifact, save_artifact
from conveyor.artifacts.store import ArtifactStore
from conveyor.exceptions import ConveyorError


@dataclass
class Remote:
    """One remote store under test: how a user registers it, and how the test reads the server behind it."""

    flavor: str
    path: str  # the store's root URL
    options: dict[str, str]  # the config fields besides path, as `register` takes them (secret references kept)
    secrets: dict[str, str]  # secret name.key -> value, created with `conveyor secret create` before registering
    credential: str  # a value that must never appear in a job spec, an object in the store, or a step's argv
    objects: Callable[[], dict[str, bytes]]  # every object under the bucket/container, read around the library
    endpoint: str
    env: dict[str, str] = field(default_factory=dict)  # what the test process needs (the AWS chain, for s3)

    def config(self) -> dict[str, Any]:
        """The config with its secret references resolved, as a run sees it."""
        resolved = {k: self.secrets.get(v.strip("{}"), v) for k, v in self.options.items()}
        return {"path": self.path, **resolved}

    def _config_model(self) -> Any:
        from conveyor.stack.registry import FlavorRegistry

        return FlavorRegistry().get("artifact_store", self.flavor).config_class(**self.config())

    def store(self) -> ArtifactStore:
        return ArtifactStore(self.path, self._config_model().storage_options() or None)

    def remote_options(self) -> dict[str, Any]:
        return self._config_model().remote_options()  # type: ignore[no-any-return]

    def register(self, conveyor_cli: Callable[..., Any], name: str, **override: str) -> None:
        """`conveyor secret create` and `conveyor artifact-store register` as a user types them, then a stack
        `cloud` (the default orchestrator, this store, the local step operator) made active."""
        for secret in sorted({ref.split(".")[0] for ref in self.secrets}):
            pairs = [f"{ref.split('.')[1]}={value}" for ref, value in self.secrets.items() if ref.startswith(secret + ".")]
            conveyor_cli("secret", "create", secret, *pairs)
        options = {**self.options, **override}
        conveyor_cli("artifact-store", "register", name, f"--flavor={self.flavor}", f"--path={self.path}",
                     *[f"--{k}={v}" for k, v in options.items()])
        conveyor_cli("stack", "register", f"cloud-{name}", "-o", "default", "-a", name, "-s", "local", "--set")


def _s3(request: pytest.FixtureRequest) -> Remote:
    from fixtures.moto_s3 import CREDENTIALS

    server = request.getfixturevalue("s3_server")
    bucket = server.new_bucket()

    def objects() -> dict[str, bytes]:
        client = server.client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}

    # s3 takes its credentials from the AWS chain here (the test process's environment), as most users do
    return Remote("s3", f"s3://{bucket}/conveyor", {"endpoint_url": server.endpoint_url}, {},
                  CREDENTIALS["AWS_SECRET_ACCESS_KEY"], objects, server.endpoint_url, env=dict(CREDENTIALS))


def _gcs(request: pytest.FixtureRequest) -> Remote:
    emulator = request.getfixturevalue("gcs_emulator")
    bucket = emulator.new_bucket()
    token = f"ya29.conveyor-test-{uuid.uuid4().hex}"  # an OAuth2 access token; the emulator checks none
    return Remote("gcs", f"gs://{bucket}/conveyor",
                  {"endpoint_url": emulator.endpoint_url, "project": "conveyor-test", "token": "{{gcp.token}}"},
                  {"gcp.token": token}, token, lambda: emulator.objects(bucket), emulator.endpoint_url)


def _azure(request: pytest.FixtureRequest) -> Remote:
    from fixtures.azurite import ACCOUNT, ACCOUNT_KEY

    azurite = request.getfixturevalue("azurite")
    container = azurite.new_container()
    return Remote("azure", f"az://{container}/conveyor",
                  {"endpoint_url": azurite.endpoint_url, "account_name": ACCOUNT, "account_key": "{{azure.key}}"},
                  {"azure.key": ACCOUNT_KEY}, ACCOUNT_KEY, lambda: azurite.objects(container), azurite.endpoint_url)


MAKERS = {"s3": _s3, "gcs": _gcs, "azure": _azure}
#: the engine's group marked on each parameter: the fixture is fetched by name, invisible to xdist_groups.py
STORES = [pytest.param(flavor, marks=pytest.mark.xdist_group(group), id=flavor)
          for flavor, group in (("s3", "s3_server"), ("gcs", "gcs_emulator"), ("azure", "azurite"))]


@pytest.fixture(params=STORES)
def remote(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Remote:
    made = MAKERS[request.param](request)
    for key, value in made.env.items():
        monkeypatch.setenv(key, value)
    return made


class Params(BaseModel):
    lr: float
    layers: list[int]


VALUES = {"json": {"a": [1, 2.5, None, "x"]}, "bytes": b"\x00raw bytes", "numpy": np.arange(12.0).reshape(3, 4),
          "dataframe": pd.DataFrame({"x": [1, 2], "y": ["a", "b"]}), "pydantic": Params(lr=0.1, layers=[64, 32])}


def _same(loaded: Any, value: Any) -> None:
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(loaded, value)
    elif isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(loaded, value)
    else:
        assert loaded == value


def _prefix(remote: Remote) -> str:
    """The store's root as an object-name prefix inside its bucket/container."""
    return remote.path.split("://", 1)[1].split("/", 1)[1] + "/"


@pytest.mark.parametrize("kind", sorted(VALUES))
def test_materializers_round_trip(remote: Remote, kind: str, project: Path) -> None:
    store = remote.store()
    meta = save_artifact(VALUES[kind], store.join("a", kind), store)
    _same(load_artifact(store.join("a", kind), store, meta.materializer, meta.data_type), VALUES[kind])
    names = list(remote.objects())
    assert any(n.startswith(f"{_prefix(remote)}a/{kind}/") for n in names), names
    assert not [n for n in names if ".tmp-" in n], f"temporaries left behind: {names}"


def test_a_large_artifact_round_trips(remote: Remote, project: Path) -> None:
    store = remote.store()
    value = np.random.default_rng(0).random(8 << 20)  # 64 MiB of float64
    meta = save_artifact(value, store.join("big"), store)
    np.testing.assert_array_equal(load_artifact(store.join("big"), store, meta.materializer, meta.data_type), value)
    sizes = {n: len(b) for n, b in remote.objects().items()}
    assert max(sizes.values()) >= value.nbytes, sizes


class Halfway:
    """A value whose materializer fails after writing half of its data."""


def test_a_failed_write_leaves_no_artifact_and_no_temporaries(remote: Remote, project: Path) -> None:
    from conveyor.artifacts.materializers import BaseMaterializer, register_materializer

    @register_materializer
    class HalfwayMaterializer(BaseMaterializer):
        ASSOCIATED_TYPES = (Halfway,)

        def save(self, data: Halfway) -> None:
            with self.store.open(self.path_for("data.bin"), "wb") as fh:
                fh.write(os.urandom(6 << 20))  # more than one upload part/block
            self.store.write_bytes(self.path_for("more.bin"), b"x" * 1024)
            raise OSError(5, "the disk behind the writer failed")

        def load(self, data_type: Any) -> Any:
            raise AssertionError("never loaded")

    store = remote.store()
    save_artifact({"kept": True}, store.join("out"), store)  # an artifact already there stays as it was
    with pytest.raises(ConveyorError):
        save_artifact(Halfway(), store.join("out"), store)
    with pytest.raises(ConveyorError):
        save_artifact(Halfway(), store.join("fresh"), store)
    assert load_artifact(store.join("out"), store) == {"kept": True}
    assert not store.exists(store.join("fresh"))
    names = list(remote.objects())
    assert not [n for n in names if ".tmp-" in n or n.startswith(f"{_prefix(remote)}fresh")], names
    assert not [n for n in names if n.endswith(("data.bin", "more.bin"))], names


WRITER = textwrap.dedent('''
    """One of several processes writing artifacts into one store at once."""
    import json, sys
    import numpy as np
    from conveyor.artifacts.materializers import save_artifact
    from conveyor.artifacts.store import ArtifactStore

    root, options, index = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    store = ArtifactStore(root, options or None)
    for k in range(3):
        save_artifact(np.full(1 << 18, index * 10 + k, dtype=np.int64), store.join("run", f"w{index}", f"a{k}"), store)
        save_artifact({"writer": index, "k": k}, store.join("run", "shared", f"w{index}-{k}"), store)
''')


def test_concurrent_writers_each_get_their_own_artifacts(remote: Remote, project: Path) -> None:
    store = remote.store()
    script = project / "writer.py"
    script.write_text(WRITER)
    # the options on argv here are this test's own (a test process, not a step): the credentials come from the
    # environment only for s3; gcs' token and Azurite's key are test values
    procs = [subprocess.Popen([sys.executable, str(script), store.root, json.dumps(store.storage_options), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
             for i in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    for i in range(4):
        for k in range(3):
            loaded = load_artifact(store.join("run", f"w{i}", f"a{k}"), store)
            assert loaded.shape == (1 << 18,) and (loaded == i * 10 + k).all()
            assert load_artifact(store.join("run", "shared", f"w{i}-{k}"), store) == {"writer": i, "k": k}
    assert not [n for n in remote.objects() if ".tmp-" in n]


LOG_WRITER = textwrap.dedent('''
    """A step's log written by another process (an orchestrator elsewhere), one line per request on stdin."""
    import json, sys
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.execution.logs import StepLog

    root, options, uri = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    log = StepLog(ArtifactStore(root, options or None), uri)
    for line in sys.stdin:
        if line.strip() == "close":
            break
        log.append(line)
        log.write_now()
        print("stored", flush=True)
    log.close()
    print("closed", flush=True)
''')


def test_a_log_another_process_writes_is_read_as_it_grows(remote: Remote, project: Path) -> None:
    """What `conveyor logs -f` and the dashboard do while a step runs: this process lists the log's folder before
    the writer has stored anything, so a listing the filesystem cached would hide every later chunk."""
    from conveyor.execution.logs import LogTail

    store = remote.store()
    uri = store.join("runs", "r1", "steps", "s", "attempt-1", "logs.txt")
    script = project / "log_writer.py"
    script.write_text(LOG_WRITER)
    writer = subprocess.Popen([sys.executable, str(script), store.root, json.dumps(store.storage_options), uri],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    tail = LogTail(store)
    tail.switch(uri)
    try:
        assert tail.read() == ""  # nothing yet: the empty listing is now in this process's cache
        seen = ""
        for n in range(3):
            writer.stdin.write(f"line {n}\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "stored"
            seen += tail.read()
            assert seen == "".join(f"line {k}\n" for k in range(n + 1)), seen
        writer.stdin.write("close\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "closed"
        assert seen + tail.read() == "line 0\nline 1\nline 2\n"  # nothing twice once the chunks become the file
    finally:
        writer.kill()
        writer.wait()


PIPELINE = textwrap.dedent('''
    """Steps in-process and on the `local` step operator, exchanging artifacts only through the store."""
    import os
    from typing import Annotated

    from conveyor import pipeline, step


    def _own_command_lines() -> str:
        """This process's argv and its parent's, where a credential passed on a command line would show."""
        out = []
        for pid in (os.getpid(), os.getppid()):
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                out.append(fh.read().replace(b"\\0", b" ").decode(errors="replace"))
        return "\\n".join(out)


    @step
    def numbers(n: int) -> list[int]:
        return list(range(n))


    @step(step_operator="local")
    def remote_sum(values: list[int]) -> tuple[Annotated[int, "total"], Annotated[str, "argv"]]:
        print(f"summing {len(values)} numbers", flush=True)
        return sum(values), _own_command_lines()


    @step
    def double(x: int) -> int:
        return 2 * x


    @pipeline(enable_cache=False)
    def through_the_store(n: int = 5):
        total, _argv = remote_sum(numbers(n))
        double(total)


    if __name__ == "__main__":
        run = through_the_store(n=5)
        print("RUN", run.id)
''')


def test_a_pipeline_exchanges_artifacts_only_through_the_store_and_no_credential_leaks(
        remote: Remote, project: Path, conveyor_cli: Callable[..., Any]) -> None:
    remote.register(conveyor_cli, "cloudstore")
    (project / "flow.py").write_text(PIPELINE)
    done = subprocess.run([sys.executable, "flow.py"], cwd=project, capture_output=True, text=True, timeout=300,
                          env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-4000:]
    from conveyor import Client

    run = Client().get_pipeline_run(done.stdout.split("RUN ", 1)[1].split()[0])
    assert run.status == "completed"
    remote_sum = run.steps["remote_sum"]
    assert remote_sum.outputs["total"].uri.startswith(remote.path + "/")
    assert run.steps["double"].outputs["output"].load() == 20
    assert "summing 5 numbers" in remote_sum.logs()
    assert not (project / ".conveyor" / "artifacts" / "runs").exists(), "something went to the local store"
    objects = remote.objects()
    jobs = {n: b for n, b in objects.items() if n.endswith("remote_sum/attempt-1/job.json")}
    assert len(jobs) == 1, sorted(objects)
    spec = json.loads(next(iter(jobs.values())))
    # the job spec holds the flavor's remote options (s3's and gcs' endpoint; azure's endpoint sits in the
    # connection string, which travels as environment with the key in it) ...
    assert spec["artifact_store"]["storage_options"] == remote.remote_options()
    leaked = [n for n, b in objects.items() if remote.credential.encode() in b]
    assert leaked == [], f"the credential is stored in {leaked}"  # ... the credential never does
    argv = remote_sum.outputs["argv"].load()
    assert "step_operator" in argv and remote.credential not in argv, argv


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


UNREACHABLE = textwrap.dedent('''
    from conveyor import pipeline, step

    @step
    def one() -> int:
        return 1

    @pipeline(enable_cache=False)
    def tiny():
        one()

    tiny()
''')


def test_an_unreachable_endpoint_fails_fast_naming_the_endpoint_and_the_fix(
        remote: Remote, project: Path, conveyor_cli: Callable[..., Any]) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    if remote.flavor == "azure":
        endpoint += "/devstoreaccount1"
    remote.register(conveyor_cli, "gone", endpoint_url=endpoint)
    (project / "tiny.py").write_text(UNREACHABLE)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "tiny.py"], cwd=project, capture_output=True, text=True, timeout=300,
                          env=os.environ.copy())
    elapsed = time.monotonic() - started
    assert done.returncode != 0
    assert elapsed < 60, f"took {elapsed:.0f}s to give up on an unreachable store"
    message = done.stderr
    assert "unreachable" in message and endpoint in message, message[-3000:]
    assert "conveyor artifact-store update" in message, message[-3000:]
