"""Settings models and unit parsing, including property-based tests on what users type."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.config import ResourceSettings, StepRetryConfig
from conveyor.config.merge import merge_settings
from conveyor.config.settings import normalize_settings
from conveyor.config.units import parse_duration, parse_memory
from conveyor.exceptions import ConfigError

ACCEPTED = {"32GB": 32 * 10**9, "32G": 32 * 10**9, "32Gi": 32 * 2**30, "32GiB": 32 * 2**30, "1.5GB": 15 * 10**8,
            "512MiB": 512 * 2**20, "512Mi": 512 * 2**20, "512MB": 512 * 10**6, "2TB": 2 * 10**12}


@pytest.mark.parametrize("text,expected", ACCEPTED.items())
def test_accepted_memory_forms(text: str, expected: int) -> None:
    assert parse_memory(text) == expected
    assert ResourceSettings(memory=text).memory_bytes == expected


@pytest.mark.parametrize("text", ["32", "GB", "32 bananas", "-1GB", "1.5.GB", "32XB", "", "0GB", "32 G B", "1e3GB"])
def test_rejected_memory_forms_list_the_accepted_ones(text: str) -> None:
    with pytest.raises(ValueError) as info:
        ResourceSettings(memory=text)
    assert '"32GB"' in str(info.value) and '"512Mi"' in str(info.value)


def test_get_memory_in_units() -> None:
    r = ResourceSettings(memory="2GiB")
    assert r.get_memory("GiB") == 2
    assert r.get_memory("MiB") == 2048
    assert r.get_memory("GB") == pytest.approx(2.147483648)
    assert ResourceSettings().get_memory() is None
    with pytest.raises(ValueError, match="unknown memory unit"):
        r.get_memory("parsecs")


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(sorted({"KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB", "K", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"})))
def test_every_integer_with_a_unit_round_trips(n: int, unit: str) -> None:
    r = ResourceSettings(memory=f"{n}{unit}")
    assert r.memory_bytes == parse_memory(f"{n}{unit}")
    canonical = unit if unit.endswith("B") else (unit + "B" if unit.endswith("i") else unit + "B")
    assert r.get_memory(canonical) == pytest.approx(n)


@given(st.text(max_size=12))
def test_arbitrary_text_is_parsed_or_refused_clearly(text: str) -> None:
    try:
        size = parse_memory(text)
    except ValueError as err:
        assert "accepted forms" in str(err) or "positive" in str(err)
    else:
        assert isinstance(size, int) and size > 0


@given(st.text(max_size=12))
def test_arbitrary_durations_are_parsed_or_refused_clearly(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as err:
        assert "duration" in str(err)
    else:
        assert seconds > 0


def test_durations() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    assert parse_duration(90) == 90.0
    assert parse_duration("2h") == 7200


def test_retry_config_backoff() -> None:
    retry = StepRetryConfig(max_retries=3, delay=10, backoff=2)
    assert [retry.delay_for(i) for i in (1, 2, 3)] == [10, 20, 40]
    with pytest.raises(ValueError):
        StepRetryConfig(max_retries=-1)


def test_resource_settings_are_strict() -> None:
    with pytest.raises(ValueError, match="gpus"):
        ResourceSettings(gpus=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        ResourceSettings(cpu_count=-1)


def test_settings_keys_and_merge() -> None:
    norm = normalize_settings({"resources": ResourceSettings(cpu_count=2), "step_operator.slurm": {"partition": "a100"},
                               "step_operator": {"x": 1}}, "step 's'")
    assert norm == {"resources": {"cpu_count": 2.0}, "step_operator.slurm": {"partition": "a100"}, "step_operator": {"x": 1}}
    assert merge_settings({"resources": {"cpu_count": 1, "memory": "1GB"}}, {"resources": {"memory": "2GB"}}) == {
        "resources": {"cpu_count": 1, "memory": "2GB"}}
    with pytest.raises(ConfigError, match="unknown settings key 'step_operator.'"):
        normalize_settings({"step_operator.": {}}, "step 's'")


@given(st.dictionaries(st.text(max_size=8), st.just({})))
def test_only_known_settings_keys_are_accepted(settings: dict) -> None:
    valid = all(k == "resources" or k == "step_operator" or (k.startswith("step_operator.") and len(k) > 14)
                for k in settings)
    try:
        normalize_settings(settings, "step 'h'")
    except ConfigError as err:
        assert not valid
        assert '"resources"' in str(err)
    else:
        assert valid
