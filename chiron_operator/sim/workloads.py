"""Workloads for the simulator: the Azure 2023 traces, a user's own trace (`traces`), batch
backlogs and synthetic arrivals.

Every stochastic generator takes an explicit `numpy.random.Generator`, so a workload is a pure
function of its arguments and seed. Lengths come in (prompt, output) pairs from the vendored
distributions, sampled jointly to keep their correlation. Generation is vectorised: replaying the
19k-request conv trace takes ~40 ms (building the `RequestSpec` objects) after a one-off ~50 ms
load.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

from chiron_operator.core.enums import RequestClass
from chiron_operator.sim.requests import RequestSpec
from chiron_operator.sim.traces import Trace, read_azure_csv

DATA_DIR = Path(__file__).parent / "data"

TraceKind = Literal["conv", "code"]
LengthSource = Literal["sharegpt", "arxiv"]
Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
_T = TypeVar("_T", bound=np.generic)

_INTERACTIVE, _BATCH = RequestClass.INTERACTIVE, RequestClass.BATCH
_LENGTH_FILES: dict[str, str] = {
    "sharegpt": "sharegpt_lengths_llama2/sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
    "arxiv": (
        "vidur_arxiv_summarization_lengths/"
        "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"
    ),
}


def _frozen(array: NDArray[_T]) -> NDArray[_T]:
    # Cached arrays are shared by every caller: make accidental mutation an error.
    array.flags.writeable = False
    return array


def azure_arrays(kind: TraceKind) -> tuple[Floats, Ints, Ints]:
    """The Azure 2023 `kind` trace: (seconds since its first request, prompt, output) tokens.

    Read once per process; the arrays are shared and read-only.
    """
    if kind not in ("conv", "code"):
        raise ValueError(f"unknown Azure trace {kind!r}; known: conv, code")
    return _load_azure(kind)


# Cached loaders sit behind typed wrappers: functools.cache would erase the Literal signatures.
@cache
def _load_azure(kind: str) -> tuple[Floats, Ints, Ints]:
    # The parser of users' Azure-format traces: one reader, one set of rules.
    return read_azure_csv(
        DATA_DIR / "azure_llm_inference_2023" / f"AzureLLMInferenceTrace_{kind}.csv"
    )


def length_samples(source: LengthSource) -> tuple[Ints, Ints]:
    """(prompt tokens, output tokens) of every request in a length distribution.

    Read once per process; the arrays are shared and read-only.
    """
    if source not in _LENGTH_FILES:
        raise ValueError(f"unknown length source {source!r}; known: {', '.join(_LENGTH_FILES)}")
    return _load_lengths(source)


@cache
def _load_lengths(source: str) -> tuple[Ints, Ints]:
    data = np.loadtxt(DATA_DIR / _LENGTH_FILES[source], delimiter=",", skiprows=1, usecols=(0, 1))
    lengths = np.maximum(data.astype(np.int64), 1)
    return _frozen(lengths[:, 0].copy()), _frozen(lengths[:, 1].copy())


def _specs(
    arrival_s: Floats,
    prompts: Ints,
    outputs: Ints,
    request_class: RequestClass,
    first_id: int,
    *,
    deadline_s: float | None = None,
) -> list[RequestSpec]:
    # tolist() yields Python ints/floats: RequestSpec fields stay plain numbers.
    return [
        RequestSpec(first_id + i, t, request_class, p, o, deadline_s)
        for i, (t, p, o) in enumerate(
            zip(arrival_s.tolist(), prompts.tolist(), outputs.tolist(), strict=True)
        )
    ]


def _scale_rate(t: Floats, scale: float, rng: np.random.Generator) -> tuple[Ints, Floats]:
    """Indices into `t` and arrival times of a trace with `scale` times as many requests.

    Each request is kept floor(scale) times, plus once more with probability frac(scale) (so
    scale < 1 thins). A request's first copy keeps its time; extra copies land uniformly between
    it and the next arrival, which preserves the rate's shape above the inter-arrival scale
    without stacking identical timestamps.
    """
    n = len(t)
    whole, frac = divmod(scale, 1.0)
    copies = np.full(n, int(whole), dtype=np.int64) + (rng.random(n) < frac)
    index = np.repeat(np.arange(n), copies)
    rank = np.arange(len(index)) - np.repeat(np.cumsum(copies) - copies, copies)
    gap = np.diff(t, append=t[-1])
    times = t[index] + np.where(rank > 0, rng.random(len(index)) * gap[index], 0.0)
    order = np.argsort(times, kind="stable")
    return index[order], times[order]


@dataclass(frozen=True, slots=True)
class Replay:
    """How a trace is replayed: the knobs of `azure_trace` (see there), for any trace."""

    rate_scale: float = 1.0
    time_compress: float = 1.0
    start_s: float = 0.0
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.rate_scale <= 0.0 or self.time_compress <= 0.0:
            raise ValueError("rate_scale and time_compress must be positive")

    def sent(self, t: Floats, rng: np.random.Generator | None) -> tuple[Ints, Floats]:
        """Which rows of a trace with arrivals `t` the replay sends, and when."""
        index: Ints = np.arange(len(t))
        if self.rate_scale != 1.0:
            if rng is None:
                raise ValueError("rate_scale != 1 needs an rng to choose the requests")
            index, t = _scale_rate(t, self.rate_scale, rng)
        t = t / self.time_compress
        end = np.inf if self.duration_s is None else self.start_s + self.duration_s
        keep = (t >= self.start_s) & (t < end)
        return index[keep], t[keep] - self.start_s


def azure_trace(
    kind: TraceKind,
    *,
    rate_scale: float = 1.0,
    time_compress: float = 1.0,
    start_s: float = 0.0,
    duration_s: float | None = None,
    first_id: int = 0,
    rng: np.random.Generator | None = None,
) -> list[RequestSpec]:
    """Replay the Azure 2023 `kind` trace as interactive requests.

    Arrivals are seconds since the trace's first request, divided by `time_compress` (2 squeezes
    the hour into 30 minutes, doubling the rate). `rate_scale` multiplies the request count by
    thinning/duplicating requests with `rng` (required unless `rate_scale` is 1), keeping the
    span. `start_s`/`duration_s` cut a window of the compressed timeline, re-based to start at 0.
    Prompt = context tokens, output = generated tokens (at least 1). Ids start at `first_id`.
    """
    replay = Replay(rate_scale, time_compress, start_s, duration_s)
    return azure_replay(kind, replay, first_id=first_id, rng=rng)


def azure_replay(
    kind: TraceKind,
    replay: Replay,
    *,
    first_id: int = 0,
    rng: np.random.Generator | None = None,
) -> list[RequestSpec]:
    """`azure_trace` with its knobs as one `Replay`."""
    t, prompts, outputs = azure_arrays(kind)
    index, arrival_s = replay.sent(t, rng)
    return _specs(arrival_s, prompts[index], outputs[index], RequestClass.INTERACTIVE, first_id)


def trace_replay(
    trace: Trace,
    replay: Replay,
    *,
    default_deadline_s: float,
    first_id: int = 0,
    rng: np.random.Generator | None = None,
) -> list[RequestSpec]:
    """Replay a user's trace (`traces.read_trace`) as `azure_trace` replays Azure's.

    Each row keeps its class; a batch request is due its row's deadline (seconds after its
    replayed arrival), or `default_deadline_s` after it when the row gives none. Deadlines are
    not compressed with time: they are what was promised, in seconds, whatever the rate.
    """
    index, arrival_s = replay.sent(trace.arrival_s, rng)
    after = trace.deadline_after_s[index]
    due = arrival_s + np.where(np.isnan(after), default_deadline_s, after)
    batch = trace.batch[index]
    rows = zip(
        arrival_s.tolist(),
        batch.tolist(),
        trace.prompt_tokens[index].tolist(),
        trace.output_tokens[index].tolist(),
        due.tolist(),
        strict=True,
    )
    return [
        RequestSpec(first_id + i, t, _BATCH if b else _INTERACTIVE, p, o, d if b else None)
        for i, (t, b, p, o, d) in enumerate(rows)
    ]


def _sample_lengths(source: LengthSource, n: int, rng: np.random.Generator) -> tuple[Ints, Ints]:
    prompts, outputs = length_samples(source)
    pick = rng.integers(0, len(prompts), size=n)
    return prompts[pick], outputs[pick]


def batch_backlog(
    n: int,
    *,
    source: LengthSource = "arxiv",
    submit_s: float = 0.0,
    deadline_s: float,
    rng: np.random.Generator,
    first_id: int = 0,
) -> list[RequestSpec]:
    """`n` batch requests submitted together at `submit_s`, due `deadline_s` seconds later."""
    if n < 0 or deadline_s <= 0.0:
        raise ValueError("need n >= 0 and a positive deadline_s")
    prompts, outputs = _sample_lengths(source, n, rng)
    arrivals = np.full(n, float(submit_s))
    return _specs(
        arrivals,
        prompts,
        outputs,
        RequestClass.BATCH,
        first_id,
        deadline_s=float(submit_s + deadline_s),
    )


def _inverse_cumulative(times: Floats, rates: Floats, u: Floats) -> Floats:
    """Times at which the integral of a piecewise-linear rate reaches each value of `u`."""
    width = np.diff(times)
    cum = np.concatenate([[0.0], np.cumsum(width * (rates[:-1] + rates[1:]) / 2.0)])
    seg = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, len(width) - 1)
    rest, r0 = u - cum[seg], rates[seg]
    # A near-zero width overflows its slope to inf; such a segment holds ~no mass and the clamp
    # below keeps any arrival inside it, so the overflow is harmless.
    with np.errstate(over="ignore", invalid="ignore"):
        slope = np.divide(np.diff(rates), width, out=np.zeros_like(width), where=width > 0)
        # Solves r0*x + slope*x^2/2 = rest in a form stable for slope -> 0 and r0 -> 0.
        denom = r0 + np.sqrt(np.maximum(r0 * r0 + 2.0 * slope[seg] * rest, 0.0))
    x = np.divide(2.0 * rest, denom, out=np.zeros_like(rest), where=denom > 0)
    arrivals: Floats = np.minimum(times[seg] + x, times[seg + 1])
    return arrivals


def rate_profile(
    times_s: Sequence[float],
    rates_per_s: Sequence[float],
    rng: np.random.Generator,
    *,
    source: LengthSource = "sharegpt",
    first_id: int = 0,
) -> list[RequestSpec]:
    """Interactive Poisson arrivals whose rate is linear between the knots (`times_s`, rates).

    Repeated knot times make steps. Exact (no thinning): the number of arrivals is Poisson with
    the integrated rate and their times invert the cumulative rate at sorted uniforms.
    """
    t = np.asarray(times_s, dtype=np.float64)
    r = np.asarray(rates_per_s, dtype=np.float64)
    if t.ndim != 1 or len(t) < 2 or t.shape != r.shape:
        raise ValueError("need at least two knots and one rate per knot")
    if (np.diff(t) < 0).any() or (r < 0).any():
        raise ValueError("knot times must be non-decreasing and rates non-negative")
    total = float(np.sum(np.diff(t) * (r[:-1] + r[1:]) / 2.0))
    n = int(rng.poisson(total))
    arrivals = _inverse_cumulative(t, r, np.sort(rng.uniform(0.0, total, size=n)))
    prompts, outputs = _sample_lengths(source, n, rng)
    return _specs(arrivals, prompts, outputs, RequestClass.INTERACTIVE, first_id)


def poisson_arrivals(
    rate_per_s: float,
    duration_s: float,
    rng: np.random.Generator,
    *,
    source: LengthSource = "sharegpt",
    start_s: float = 0.0,
    first_id: int = 0,
) -> list[RequestSpec]:
    """Interactive arrivals at a constant rate over [start_s, start_s + duration_s)."""
    return rate_profile(
        (start_s, start_s + duration_s),
        (rate_per_s, rate_per_s),
        rng,
        source=source,
        first_id=first_id,
    )


def burst(
    base_rate_per_s: float,
    peak_rate_per_s: float,
    duration_s: float,
    rng: np.random.Generator,
    *,
    burst_start_s: float,
    burst_len_s: float,
    source: LengthSource = "sharegpt",
    first_id: int = 0,
) -> list[RequestSpec]:
    """Interactive arrivals at `base_rate_per_s`, stepping to `peak_rate_per_s` for a while."""
    if not 0.0 <= burst_start_s <= burst_start_s + burst_len_s <= duration_s:
        raise ValueError("the burst must lie within [0, duration_s]")
    end = burst_start_s + burst_len_s
    times = (0.0, burst_start_s, burst_start_s, end, end, duration_s)
    base, peak = base_rate_per_s, peak_rate_per_s
    rates = (base, base, peak, peak, base, base)
    return rate_profile(times, rates, rng, source=source, first_id=first_id)


def ramp(
    start_rate_per_s: float,
    end_rate_per_s: float,
    duration_s: float,
    rng: np.random.Generator,
    *,
    source: LengthSource = "sharegpt",
    first_id: int = 0,
) -> list[RequestSpec]:
    """Interactive arrivals whose rate moves linearly from start to end over `duration_s`."""
    return rate_profile(
        (0.0, duration_s),
        (start_rate_per_s, end_rate_per_s),
        rng,
        source=source,
        first_id=first_id,
    )


def merge(*workloads: Iterable[RequestSpec], renumber: bool = False) -> list[RequestSpec]:
    """All requests of `workloads`, sorted by (arrival_s, request_id).

    Ids must be unique across workloads (give each a distinct `first_id`); a clash raises
    ValueError rather than silently dropping or renaming requests. With `renumber`, ids are
    reassigned 0..n-1 in merged order instead.
    """
    merged = sorted((r for w in workloads for r in w), key=lambda r: (r.arrival_s, r.request_id))
    if renumber:
        return [replace(r, request_id=i) for i, r in enumerate(merged)]
    if len({r.request_id for r in merged}) != len(merged):
        raise ValueError("request ids clash across workloads: pass distinct first_id values")
    return merged
