"""A large ndarray handed from an in-process step to its one in-process reader in memory (execution/handover.py):
the reader gets the producer's array itself only where no one else could see what it does to it; otherwise, and
on a retry, it loads the stored copy, which the reader's changes never reach. An array nothing else references is
written giving its pages back as it goes (artifacts/materializers/_npy.py), and one something references is
left whole. The thresholds are lowered here so that small arrays stand for large ones (bench/ndarray_handoff.py
measures a 1 GiB one)."""

from __future__ import annotations

import gc
import io
import weakref
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest

from conveyor import pipeline, step
from conveyor.artifacts.materializers import _npy
from conveyor.artifacts.materializers._npy import Writing, write_npy, writing
from conveyor.execution import handover

N = 1 << 16  # 512 KiB of float64, over the lowered threshold

#: what the steps saw, by step name: ids, types and weak references, none of which keeps an array alive
SEEN: dict[str, Any] = {}
KEPT: list[np.ndarray] = []  # a producer that keeps its output


@pytest.fixture(autouse=True)
def _small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handover, "HANDOVER_MIN_BYTES", 1 << 18)
    monkeypatch.setattr(_npy, "RELEASE_MIN_BYTES", 1 << 18)
    SEEN.clear()
    KEPT.clear()


def _saw(name: str, x: np.ndarray) -> None:
    SEEN[name] = {"id": id(x), "type": type(x), "ref": weakref.ref(x)}


@step
def make(n: int) -> np.ndarray:
    x = np.arange(n, dtype=np.float64)
    _saw("make", x)
    return x


@step
def make_and_keep(n: int) -> np.ndarray:
    x = np.arange(n, dtype=np.float64)
    KEPT.append(x)  # the producer holds on to it: a reader's change would show here
    _saw("make", x)
    return x


@step
def change(x: np.ndarray) -> Annotated[float, "total"]:
    _saw("change", x)
    x += 1  # a step may change its input in place
    return float(x.sum())


@step
def change_again(x: np.ndarray) -> float:
    _saw("change_again", x)
    x *= 2
    return float(x.sum())


def _arange_sum(n: int, plus: float = 0.0) -> float:
    return float(np.arange(n, dtype=np.float64).sum() + plus * n)


def _stored(run: Any, step_name: str) -> np.ndarray:
    return np.asarray(run.steps[step_name].outputs["output"].load())


@pipeline(enable_cache=False)
def one_reader(n: int = N) -> None:
    change(make(n))


def test_the_one_in_process_reader_gets_the_producers_array_and_the_stored_copy_stays_as_saved() -> None:
    run = one_reader()
    assert run.status == "completed"
    assert SEEN["change"]["id"] == SEEN["make"]["id"] and SEEN["change"]["type"] is np.ndarray
    assert run.steps["change"].outputs["total"].load() == _arange_sum(N, 1)
    np.testing.assert_array_equal(_stored(run, "make"), np.arange(N, dtype=np.float64))  # the `x += 1` stayed its own
    gc.collect()
    assert SEEN["make"]["ref"]() is None  # nothing holds it after the run


@pipeline(enable_cache=False)
def kept_by_producer(n: int = N) -> None:
    change(make_and_keep(n))


def test_an_array_the_producer_still_references_is_loaded_from_the_store_instead() -> None:
    run = kept_by_producer()
    assert run.status == "completed"
    assert isinstance(SEEN["change"]["type"], type) and issubclass(SEEN["change"]["type"], np.memmap)
    np.testing.assert_array_equal(KEPT[0], np.arange(N, dtype=np.float64))  # the reader's change did not reach it
    assert run.steps["change"].outputs["total"].load() == _arange_sum(N, 1)


@pipeline(enable_cache=False)
def two_readers(n: int = N) -> None:
    x = make(n)
    change(x)
    change_again(x)


def test_an_array_two_steps_read_is_loaded_by_each() -> None:
    run = two_readers()
    assert run.status == "completed"
    assert issubclass(SEEN["change"]["type"], np.memmap) and issubclass(SEEN["change_again"]["type"], np.memmap)
    assert run.steps["change"].outputs["total"].load() == _arange_sum(N, 1)
    assert run.steps["change_again"].outputs["output"].load() == 2 * _arange_sum(N)


@step(step_operator="local")
def change_elsewhere(x: np.ndarray) -> float:
    x += 1
    return float(x.sum())


@pipeline(enable_cache=False)
def reader_on_an_operator(n: int = N) -> None:
    change_elsewhere(make(n))


def test_a_reader_on_a_step_operator_reads_the_store_and_nothing_stays_held() -> None:
    run = reader_on_an_operator()
    assert run.status == "completed"
    assert run.steps["change_elsewhere"].outputs["output"].load() == _arange_sum(N, 1)
    gc.collect()
    assert SEEN["make"]["ref"]() is None


ATTEMPTS: list[int] = []


@step(retry={"max_retries": 1, "delay": 0})
def change_then_fail_once(x: np.ndarray) -> float:
    _saw(f"attempt-{len(ATTEMPTS) + 1}", x)
    total = float(x.sum())
    x += 1
    ATTEMPTS.append(1)
    if len(ATTEMPTS) == 1:
        raise RuntimeError("first attempt fails after changing its input")
    return total


@pipeline(enable_cache=False)
def retried_reader(n: int = N) -> None:
    change_then_fail_once(make(n))


def test_a_retried_reader_gets_the_stored_copy_not_the_array_its_first_attempt_changed() -> None:
    ATTEMPTS.clear()
    run = retried_reader()
    assert run.status == "completed" and len(ATTEMPTS) == 2
    assert SEEN["attempt-1"]["id"] == SEEN["make"]["id"]  # the first attempt had the array itself...
    assert issubclass(SEEN["attempt-2"]["type"], np.memmap)  # ...the retry the stored copy, unchanged
    assert run.steps["change_then_fail_once"].outputs["output"].load() == _arange_sum(N)


@step
def boom() -> int:
    raise RuntimeError("the other branch fails")


@step
def after(x: np.ndarray, y: int) -> float:
    return float(x.sum()) + y


@pipeline(enable_cache=False)
def reader_never_runs(n: int = N) -> None:
    after(make(n), boom())


def test_an_array_whose_reader_never_runs_is_let_go_when_the_run_ends() -> None:
    with pytest.raises(Exception):
        reader_never_runs()
    gc.collect()
    assert "make" in SEEN and SEEN["make"]["ref"]() is None


def test_a_view_a_read_only_array_or_a_small_one_is_never_held() -> None:
    base = np.arange(N, dtype=np.float64)
    read_only = np.arange(N, dtype=np.float64)
    read_only.flags.writeable = False
    assert handover.can_hand_over(np.arange(N, dtype=np.float64))
    assert not handover.can_hand_over(base[: N // 2 + N // 4])  # a view: its base belongs to someone else
    assert not handover.can_hand_over(read_only)
    assert not handover.can_hand_over(np.arange(8, dtype=np.float64))  # below the threshold
    assert not handover.can_hand_over(list(range(N)))


@pytest.mark.parametrize("how", [Writing.PAST_THE_CACHE, Writing.RELEASING], ids=["past-the-cache", "releasing"])
def test_an_array_written_either_way_is_the_file_np_save_writes_with_its_digest(tmp_path: Path, how: Writing) -> None:
    import hashlib

    small = np.random.default_rng(0).random((3 << 20) // 8 + 5)  # within one 16 MiB chunk, not whole pages
    big = np.arange((40 << 20) // 8 + 3, dtype=np.float64)  # three chunks, the last one partial
    for name, value in (("small", small), ("big", big)):
        expected = io.BytesIO()
        np.save(expected, value, allow_pickle=False)
        path = tmp_path / f"{name}.npy"
        with open(path, "wb") as fh, writing(how):
            size, digest = write_npy(fh, value)
        assert path.read_bytes() == expected.getvalue()
        assert (size, digest) == (len(expected.getvalue()), hashlib.sha256(expected.getvalue()).hexdigest())
    if how is Writing.RELEASING:  # the pages were given back: what is left of the array reads as zeros
        assert not big[big.size // 2:big.size // 2 + 4096].any()
    else:
        assert big[-1] == big.size - 1


def _refusing_sync_file_range(*args: Any) -> int:
    return -1  # as for a file whose filesystem does not support it


@pytest.mark.parametrize("sync", ["sync_file_range", "absent", "refused"])
def test_an_array_written_past_the_cache_leaves_its_file_out_of_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: str) -> None:
    """The write-back runs DEPTH chunks behind the writer, or (without sync_file_range) a flush per chunk: either
    way the file is whole, and none of it is left in the page cache (util-linux's fincore counts its resident
    bytes), while a plain write leaves all of it there."""
    import subprocess
    import types

    if sync != "sync_file_range":
        libc = _npy._libc()
        fake = types.SimpleNamespace(madvise=libc.madvise)
        if sync == "refused":
            fake.sync_file_range = _refusing_sync_file_range
        monkeypatch.setattr(_npy, "_libc", lambda: fake)
    big = np.arange((8 * 16 << 20) // 8 + 5, dtype=np.float64)  # 8 chunks and a bit: more than DEPTH in flight

    def resident(path: Path) -> int:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)], check=True,
                             capture_output=True, text=True).stdout
        return int(out.strip())

    for how, path in ((Writing.PAST_THE_CACHE, tmp_path / "past.npy"), (Writing.PLAIN, tmp_path / "plain.npy")):
        with open(path, "wb") as fh, writing(how):
            fh.write(b"x" * 100)  # the array need not start the file: what was there before is dropped too
            write_npy(fh, big)
    # partial pages at the edges at most (the kernel drops only whole pages)
    assert resident(tmp_path / "past.npy") <= 2 * 4096, resident(tmp_path / "past.npy")
    assert resident(tmp_path / "plain.npy") >= big.nbytes // 2  # the control: most of it (unless memory is short)
    for path in (tmp_path / "past.npy", tmp_path / "plain.npy"):
        with path.open("rb") as fh:
            assert fh.read(100) == b"x" * 100
            np.testing.assert_array_equal(np.load(fh), big)


def test_an_array_is_only_released_into_a_local_file(tmp_path: Path) -> None:
    """A remote store's file object may keep the slices it is given to send later: there the array stays whole."""
    big = np.arange((2 << 20) // 8, dtype=np.float64)
    with writing(Writing.RELEASING):
        write_npy(io.BytesIO(), big)
    np.testing.assert_array_equal(big, np.arange((2 << 20) // 8, dtype=np.float64))


@step
def both(n: int) -> tuple[Annotated[np.ndarray, "a"], Annotated[np.ndarray, "b"]]:
    x = np.arange(n, dtype=np.float64)
    return x, x  # one array, two outputs: saving the first must not give its pages back


@pipeline(enable_cache=False)
def twice(n: int = N) -> None:
    both(n)  # no reader: neither output is held for one, so each is saved as owned if nothing else holds it


def test_an_array_returned_as_two_outputs_is_stored_whole_as_both() -> None:
    run = twice()
    assert run.status == "completed"
    for output in ("a", "b"):
        np.testing.assert_array_equal(run.steps["both"].outputs[output].load(), np.arange(N, dtype=np.float64))


@pipeline(enable_cache=False)
def kept_and_unread(n: int = N) -> None:
    make_and_keep(n)


def test_an_array_the_step_still_references_keeps_its_memory_when_saved() -> None:
    run = kept_and_unread()
    assert run.status == "completed"
    np.testing.assert_array_equal(KEPT[0], np.arange(N, dtype=np.float64))  # not given back as it was written
    np.testing.assert_array_equal(_stored(run, "make_and_keep"), np.arange(N, dtype=np.float64))


@pipeline(enable_cache=False)
def unread(n: int = N) -> None:
    make(n)


def test_an_array_nothing_else_references_gives_its_pages_back_as_it_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    given: list[int] = []
    monkeypatch.setattr(_npy, "_give_back", lambda address, length: given.append(length))
    run = unread()
    assert run.status == "completed"
    assert sum(given) == N * 8  # every chunk of it, once written and hashed
    np.testing.assert_array_equal(_stored(run, "make"), np.arange(N, dtype=np.float64))


BIG = (64 << 20) // 8 + 3  # over the real threshold (a step process is not monkeypatched), not whole pages


@step(step_operator="local")
def make_big(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@step(step_operator="local")
def sum_big(x: np.ndarray) -> float:
    return float(x.sum())


@pipeline(enable_cache=False)
def through_step_processes(n: int = BIG) -> None:
    sum_big(make_big(n))


def test_a_large_array_from_a_step_process_arrives_whole() -> None:
    run = through_step_processes()
    assert run.status == "completed"
    assert run.steps["sum_big"].outputs["output"].load() == _arange_sum(BIG)
    np.testing.assert_array_equal(run.steps["make_big"].outputs["output"].load(), np.arange(BIG, dtype=np.float64))
