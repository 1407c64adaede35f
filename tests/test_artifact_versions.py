"""Artifacts by name and version: numbered per name across runs, saved and loaded by name inside a step (in-process
or on a step operator, which reads the artifact store's index) and outside, listed by the Client and the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated

import pytest

from conveyor import Client, load_artifact, pipeline, save_artifact, step
from conveyor.artifacts import ArtifactCorruptedError


@step
def make_model(scale: int = 1) -> Annotated[dict, "model"]:
    return {"weights": [scale, 2 * scale]}


@step(step_operator="local")
def evaluate(model: dict) -> float:
    return float(sum(model["weights"]))


@pipeline
def versioned(scale: int = 1):
    evaluate(make_model(scale))


def _save_and_load() -> dict:
    save_artifact({"vocab": ["a", "b"]}, "vocabulary")
    return {"own": load_artifact("vocabulary"), "earlier": load_artifact("seed"),
            "pinned": load_artifact("seed", version=1)}


@step
def saves_here() -> dict:
    return _save_and_load()


@step(step_operator="local")
def saves_remote() -> dict:
    return _save_and_load()


@step(step_operator="local")
def loads_remote() -> list:
    return [load_artifact("vocabulary"), load_artifact("model")]


def test_named_and_default_outputs_get_versions_across_runs() -> None:
    first = versioned(scale=1)
    second = versioned(scale=2)
    assert first.steps["make_model"].outputs["model"].name == "model"
    assert (first.steps["make_model"].outputs["model"].version, second.steps["make_model"].outputs["model"].version) == ("1", "2")
    remote = second.steps["evaluate"].outputs["output"]
    assert remote.name == "versioned::evaluate::output" and remote.version == "2"
    client = Client()
    assert [v.version for v in client.list_artifact_versions("model")] == ["1", "2"]
    assert client.get_artifact_version("model").load() == {"weights": [2, 4]}
    assert client.get_artifact_version("model", 1).load() == {"weights": [1, 2]}
    by_id = client.get_artifact_version(first.steps["make_model"].outputs["model"].id)
    assert (by_id.name, by_id.version, by_id.producer_run_name) == ("model", "1", first.name)


def test_a_cache_hit_reuses_the_version_and_creates_none() -> None:
    first = versioned(scale=3)
    again = versioned(scale=3)
    assert again.steps["make_model"].status == "cached"
    assert again.steps["make_model"].outputs["model"].version == first.steps["make_model"].outputs["model"].version
    assert [v.version for v in Client().list_artifact_versions("model")] == ["1"]


@pytest.mark.parametrize("name", ["saves_here", "saves_remote"])
def test_save_and_load_by_name_inside_a_step(name: str) -> None:
    seed = save_artifact([1, 2, 3], "seed")
    save_artifact([4, 5], "seed")
    assert (seed.name, seed.version) == ("seed", "1")
    target = {"saves_here": saves_here, "saves_remote": saves_remote}[name]

    @pipeline(enable_cache=False)
    def saving():
        target()

    run = saving()
    assert run.steps[name].outputs["output"].load() == {"own": {"vocab": ["a", "b"]}, "earlier": [4, 5],
                                                         "pinned": [1, 2, 3]}
    saved = Client().get_artifact_version("vocabulary")
    assert (saved.version, saved.producer_run_name, saved.producer_step_name) == ("1", run.name, name)
    assert load_artifact("vocabulary") == {"vocab": ["a", "b"]}


def test_a_remote_step_loads_what_other_runs_recorded() -> None:
    versioned(scale=5)
    save_artifact({"vocab": ["z"]}, "vocabulary")

    @pipeline(enable_cache=False)
    def loading():
        loads_remote()

    run = loading()
    assert run.steps["loads_remote"].outputs["output"].load() == [{"vocab": ["z"]}, {"weights": [5, 10]}]


def test_an_explicit_version_is_kept_and_never_taken_twice() -> None:
    assert save_artifact("v-a", "tokenizer", version="prod").version == "prod"
    assert save_artifact("v-b", "tokenizer").version == "1"
    with pytest.raises(Exception, match="already has a version 'prod'"):
        save_artifact("v-c", "tokenizer", version="prod")
    assert load_artifact("tokenizer", version="prod") == "v-a"
    assert load_artifact("tokenizer") == "v-b"


def test_a_missing_artifact_says_how_to_find_one() -> None:
    with pytest.raises(Exception, match="no artifact named or with id 'nothing'.*conveyor artifact list"):
        load_artifact("nothing")


def test_concurrent_saves_never_share_a_version() -> None:
    Client().store.ensure_schema()
    versions: list[str] = []
    lock = threading.Lock()

    def save() -> None:
        for _ in range(5):
            v = save_artifact(1, "contended").version
            with lock:
                versions.append(v)

    threads = [threading.Thread(target=save) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions, key=int) == [str(i) for i in range(1, 16)]


def test_load_checks_the_recorded_checksum() -> None:
    version = save_artifact({"a": 1}, "guarded")
    data = next(p for p in Path(version.uri).iterdir() if not p.name.startswith("."))
    data.write_text(data.read_text().replace("1", "2"))
    with pytest.raises(ArtifactCorruptedError):
        load_artifact("guarded")


def test_the_cli_lists_and_describes_versions(conveyor_cli) -> None:
    versioned(scale=1)
    versioned(scale=2)
    listed = json.loads(conveyor_cli("artifact", "list", "model", "--output", "json").stdout)
    assert [(a["name"], a["version"]) for a in listed] == [("model", "1"), ("model", "2")]
    described = json.loads(conveyor_cli("artifact", "describe", "model:1", "--output", "json").stdout)
    assert described["version"] == "1" and described["producer_step"] == "make_model"
    by_id = json.loads(conveyor_cli("artifact", "describe", listed[1]["id"], "--output", "json").stdout)
    assert by_id["version"] == "2"
    text = conveyor_cli("artifact", "describe", "versioned::evaluate::output").stdout
    assert "Artifact versioned::evaluate::output version 2" in text
    assert "versioned::evaluate::output" in conveyor_cli("artifact", "list").stdout
    missing = conveyor_cli("artifact", "describe", "model:9", check=False)
    assert missing.returncode == 1 and "no version 9 of artifact 'model'" in missing.stderr
