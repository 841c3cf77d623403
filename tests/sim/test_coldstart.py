"""Cold-start presets built from the public start-up reports."""

from __future__ import annotations

import numpy as np
import pytest

from chiron_operator.perfmodel.coldstart import (
    ColdStartModel,
    cold_start,
    cold_start_names,
    image_pull_20gb,
    presets,
)


def test_preset_names() -> None:
    assert cold_start_names() == ("8b-warm", "8b-image-pull", "70b-tp8-warm", "70b-tp8-image-pull")


@pytest.mark.parametrize(
    ("name", "low_s", "high_s"),
    [("8b-warm", 30.0, 60.0), ("70b-tp8-warm", 120.0, 240.0)],
)
def test_warm_medians_are_in_the_reported_ranges(name: str, low_s: float, high_s: float) -> None:
    assert low_s <= cold_start(name).median_s <= high_s


@pytest.mark.parametrize("size", ["8b", "70b-tp8"])
def test_image_pull_adds_five_to_ten_minutes(size: str) -> None:
    extra = cold_start(f"{size}-image-pull").median_s - cold_start(f"{size}-warm").median_s
    assert 300.0 <= extra <= 600.0
    assert 300.0 <= image_pull_20gb().median_s <= 600.0


def test_presets_come_from_the_csv_rows() -> None:
    # 8b-warm spans the three whole-start reports; 70b adds the phases of vllm#19824.
    assert (cold_start("8b-warm").low_s, cold_start("8b-warm").high_s) == (34.11, 59.0)
    assert (cold_start("70b-tp8-warm").low_s, cold_start("70b-tp8-warm").high_s) == (155.0, 215.0)
    assert (image_pull_20gb().low_s, image_pull_20gb().high_s) == (480.0, 600.0)
    for model in presets().values():
        assert model.evidence
        assert len(set(model.evidence)) == len(model.evidence)


def test_sampling_is_deterministic_by_seed() -> None:
    model = cold_start("70b-tp8-warm")
    first = [model.sample_s(np.random.default_rng(7)) for _ in range(3)]
    assert first == [model.sample_s(np.random.default_rng(7)) for _ in range(3)]
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    assert [model.sample_s(rng_a) for _ in range(50)] == [model.sample_s(rng_b) for _ in range(50)]
    assert model.sample_s(np.random.default_rng(1)) != model.sample_s(np.random.default_rng(2))


def test_samples_cover_the_reported_range_about_90_percent() -> None:
    model = cold_start("8b-warm")
    rng = np.random.default_rng(0)
    samples = np.array([model.sample_s(rng) for _ in range(20_000)])
    inside = np.mean((samples >= model.low_s) & (samples <= model.high_s))
    assert inside == pytest.approx(0.90, abs=0.01)
    assert np.median(samples) == pytest.approx(model.median_s, rel=0.01)
    assert samples.min() > 0


def test_plus_adds_percentiles_and_evidence() -> None:
    a = ColdStartModel("a", 10.0, 20.0, ("x",))
    b = ColdStartModel("b", 1.0, 4.0, ("y",))
    total = a.plus(b, "a+b")
    assert (total.name, total.low_s, total.high_s, total.evidence) == (
        "a+b",
        11.0,
        24.0,
        ("x", "y"),
    )


def test_invalid_ranges_and_unknown_names_raise() -> None:
    with pytest.raises(ValueError, match="low_s <= high_s"):
        ColdStartModel("bad", 10.0, 5.0)
    with pytest.raises(ValueError, match="0 < low_s"):
        ColdStartModel("bad", 0.0, 5.0)
    with pytest.raises(ValueError, match="8b-warm"):
        cold_start("405b")


def test_presets_are_read_only() -> None:
    with pytest.raises(TypeError):
        presets()["8b-warm"] = ColdStartModel("x", 1.0, 2.0)  # type: ignore[index]
