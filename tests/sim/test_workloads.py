"""Workload generators: Azure replays, length distributions, backlogs, synthetic arrivals."""

from __future__ import annotations

import hashlib
import re
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chiron_operator.core.enums import RequestClass
from chiron_operator.perfmodel import calibration
from chiron_operator.sim import workloads as wl
from chiron_operator.sim.requests import RequestSpec

# From data/README.md: requests, mean rate, mean prompt, mean output.
AZURE = {"code": (8_819, 2.6, 2048, 28), "conv": (19_366, 5.5, 1155, 211)}


def _times(requests: list[RequestSpec]) -> np.ndarray:
    return np.array([r.arrival_s for r in requests])


def _span(requests: list[RequestSpec]) -> float:
    return requests[-1].arrival_s - requests[0].arrival_s


@pytest.mark.parametrize("kind", ["code", "conv"])
def test_azure_trace_matches_the_readme(kind: wl.TraceKind) -> None:
    count, rate, prompt_mean, output_mean = AZURE[kind]
    trace = wl.azure_trace(kind, first_id=5)
    assert len(trace) == count
    assert len(trace) / _span(trace) == pytest.approx(rate, rel=0.05)
    assert np.mean([r.prompt_tokens for r in trace]) == pytest.approx(prompt_mean, rel=0.01)
    assert np.mean([r.output_tokens for r in trace]) == pytest.approx(output_mean, rel=0.02)
    assert trace[0].arrival_s == 0.0
    assert [r.request_id for r in trace] == list(range(5, 5 + count))
    assert (np.diff(_times(trace)) >= 0).all()
    assert all(r.request_class is RequestClass.INTERACTIVE and r.deadline_s is None for r in trace)
    assert min(r.output_tokens for r in trace) >= 1
    assert all(type(r.prompt_tokens) is int and type(r.arrival_s) is float for r in trace[:10])


def test_conv_trace_is_fast() -> None:
    wl.azure_trace("conv")  # load once; the replay itself is what simulations repeat
    start = time.perf_counter()
    wl.azure_trace("conv", rate_scale=1.5, rng=np.random.default_rng(0))
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize("scale", [0.5, 1.5, 2.0, 3.25])
def test_rate_scale_multiplies_the_count_and_keeps_the_span(scale: float) -> None:
    base = wl.azure_trace("conv")
    scaled = wl.azure_trace("conv", rate_scale=scale, rng=np.random.default_rng(3))
    assert len(scaled) == pytest.approx(scale * len(base), rel=0.02)
    assert _span(scaled) == pytest.approx(_span(base), rel=0.01)
    assert (np.diff(_times(scaled)) >= 0).all()
    assert len({r.request_id for r in scaled}) == len(scaled)


def test_rate_scale_keeps_the_per_minute_shape() -> None:
    base = np.histogram(_times(wl.azure_trace("code")), bins=60, range=(0, 3600))[0]
    doubled = wl.azure_trace("code", rate_scale=2.0, rng=np.random.default_rng(0))
    twice = np.histogram(_times(doubled), bins=60, range=(0, 3600))[0]
    assert np.corrcoef(base, twice)[0, 1] > 0.99


def test_rate_scale_is_deterministic_and_needs_an_rng() -> None:
    def make(seed: int) -> list[RequestSpec]:
        return wl.azure_trace("code", rate_scale=1.7, rng=np.random.default_rng(seed))

    assert make(11) == make(11)
    assert make(11) != make(12)
    with pytest.raises(ValueError, match="rng"):
        wl.azure_trace("code", rate_scale=2.0)
    with pytest.raises(ValueError, match="positive"):
        wl.azure_trace("code", time_compress=0.0)


def test_time_compress_halves_the_span() -> None:
    base, squeezed = wl.azure_trace("conv"), wl.azure_trace("conv", time_compress=2.0)
    assert len(squeezed) == len(base)
    assert _span(squeezed) == pytest.approx(_span(base) / 2.0)


def test_window_is_cut_from_the_compressed_timeline_and_rebased() -> None:
    full = _times(wl.azure_trace("conv", time_compress=2.0))
    window = wl.azure_trace("conv", time_compress=2.0, start_s=300.0, duration_s=600.0)
    expected = full[(full >= 300.0) & (full < 900.0)] - 300.0
    np.testing.assert_allclose(_times(window), expected)
    assert window[0].request_id == 0


def test_length_samples_match_the_readme() -> None:
    readme: tuple[tuple[wl.LengthSource, int, int, int], ...] = (
        ("sharegpt", 30_731, 2340, 439),
        ("arxiv", 28_257, 2588, 291),
    )
    for source, count, prompt_mean, output_mean in readme:
        prompts, outputs = wl.length_samples(source)
        assert len(prompts) == len(outputs) == count
        assert prompts.mean() == pytest.approx(prompt_mean, rel=0.01)
        assert outputs.mean() == pytest.approx(output_mean, rel=0.01)
        assert prompts.min() >= 1 and outputs.min() >= 1
        assert wl.length_samples(source) is wl.length_samples(source)
        with pytest.raises(ValueError, match="read-only"):
            prompts[0] = 0
    with pytest.raises(ValueError, match="sharegpt"):
        wl.length_samples("wikipedia")  # type: ignore[arg-type]


def test_batch_backlog_deadlines_are_submit_plus_deadline() -> None:
    backlog = wl.batch_backlog(
        500,
        source="arxiv",
        submit_s=120.0,
        deadline_s=3600.0,
        rng=np.random.default_rng(4),
        first_id=1_000,
    )
    assert len(backlog) == 500
    assert all(r.deadline_s == 3720.0 and r.arrival_s == 120.0 for r in backlog)
    assert all(r.request_class is RequestClass.BATCH for r in backlog)
    assert [r.request_id for r in backlog] == list(range(1_000, 1_500))
    pairs = set(zip(*(a.tolist() for a in wl.length_samples("arxiv")), strict=True))
    assert all((r.prompt_tokens, r.output_tokens) in pairs for r in backlog)
    again = wl.batch_backlog(
        500,
        source="arxiv",
        submit_s=120.0,
        deadline_s=3600.0,
        rng=np.random.default_rng(4),
        first_id=1_000,
    )
    assert backlog == again


def test_poisson_arrivals_rate_window_and_determinism() -> None:
    def make(seed: int) -> list[RequestSpec]:
        return wl.poisson_arrivals(4.0, 2_000.0, np.random.default_rng(seed), start_s=50.0)

    arrivals = make(9)
    assert abs(len(arrivals) - 8_000) < 4 * np.sqrt(8_000)
    t = _times(arrivals)
    assert t.min() >= 50.0 and t.max() < 2_050.0 and (np.diff(t) >= 0).all()
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential gaps
    assert arrivals == make(9)


def test_burst_steps_the_rate_up_and_back() -> None:
    rng = np.random.default_rng(5)
    requests = wl.burst(2.0, 20.0, 900.0, rng, burst_start_s=300.0, burst_len_s=300.0)
    counts = np.histogram(_times(requests), bins=3, range=(0.0, 900.0))[0]
    assert counts / 300.0 == pytest.approx([2.0, 20.0, 2.0], rel=0.15)
    with pytest.raises(ValueError, match="within"):
        wl.burst(1.0, 2.0, 100.0, rng, burst_start_s=90.0, burst_len_s=20.0)


def test_ramp_rate_grows_linearly() -> None:
    requests = wl.ramp(0.0, 10.0, 1_000.0, np.random.default_rng(6))
    halves = np.histogram(_times(requests), bins=2, range=(0.0, 1_000.0))[0]
    assert halves / 1_000.0 == pytest.approx([1.25, 3.75], rel=0.08)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0.0, 50.0), min_size=2, max_size=6),
    st.lists(st.floats(0.0, 5.0), min_size=6, max_size=6),
    st.integers(0, 2**32 - 1),
)
def test_rate_profile_arrivals_stay_on_positive_rate_and_sorted(
    gaps: list[float], rates: list[float], seed: int
) -> None:
    knots = np.concatenate([[0.0], np.cumsum(gaps[1:])]).tolist()
    knot_rates = rates[: len(knots)]
    requests = wl.rate_profile(knots, knot_rates, np.random.default_rng(seed))
    t = _times(requests)
    assert (np.diff(t) >= 0).all()
    if len(t):
        assert t.min() >= knots[0] and t.max() <= knots[-1]
        rate_at = np.interp(t, knots, knot_rates)
        # Arrivals can only fall where the rate is positive (or exactly on a knot).
        assert ((rate_at > 0) | np.isin(t, knots)).all()


def test_rate_profile_rejects_bad_knots() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="two knots"):
        wl.rate_profile([0.0], [1.0], rng)
    with pytest.raises(ValueError, match="non-decreasing"):
        wl.rate_profile([0.0, 10.0, 5.0], [1.0, 1.0, 1.0], rng)


def test_merge_keeps_everything_sorted_with_unique_ids() -> None:
    rng = np.random.default_rng(8)
    interactive = wl.azure_trace("code", duration_s=600.0)
    backlog = wl.batch_backlog(300, submit_s=60.0, deadline_s=1_800.0, rng=rng, first_id=100_000)
    synthetic = wl.poisson_arrivals(1.0, 600.0, rng, first_id=200_000)
    merged = wl.merge(interactive, backlog, synthetic)
    assert len(merged) == len(interactive) + len(backlog) + len(synthetic)
    assert {r.request_id for r in merged} == {
        r.request_id for r in (*interactive, *backlog, *synthetic)
    }
    keys = [(r.arrival_s, r.request_id) for r in merged]
    assert keys == sorted(keys)


def test_merge_refuses_clashing_ids_unless_renumbering() -> None:
    rng = np.random.default_rng(10)
    a = wl.poisson_arrivals(1.0, 100.0, rng)
    b = wl.batch_backlog(50, submit_s=10.0, deadline_s=100.0, rng=rng)
    with pytest.raises(ValueError, match="first_id"):
        wl.merge(a, b)
    renumbered = wl.merge(a, b, renumber=True)
    assert [r.request_id for r in renumbered] == list(range(len(a) + len(b)))
    assert (np.diff(_times(renumbered)) >= 0).all()


def test_vendored_files_match_their_readme_checksums() -> None:
    roots = (wl.DATA_DIR, calibration.DATA_DIR)
    folders = [p for root in roots for p in root.iterdir() if p.is_dir()]
    assert len(folders) == 6
    for folder in folders:
        readme = (folder / "README.md").read_text()
        listed = re.findall(
            r"^\| (\S+\.csv) \| [\d,]+ \| [\d,]+ \| ([0-9a-f]{64}) \|$", readme, re.M
        )
        assert {name for name, _ in listed} == {p.name for p in folder.glob("*.csv")}, folder
        for name, digest in listed:
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
