"""demo.png: replicas per role, load, batch size and latency against the SLOs, over time."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")  # files only: the demo may run without a display

import matplotlib.pyplot as plt
import numpy as np

from chiron_operator.devcluster.demo.report import ROLES, DemoRecord

COLORS: Final = {"interactive": "tab:blue", "mixed": "tab:purple", "batch": "tab:orange"}
WINDOW_S: Final = 5.0


def plot(record: DemoRecord, path: Path) -> Path:
    """Write the four-panel figure; returns its path."""
    fig, axes = plt.subplots(4, 1, figsize=(11, 12), sharex=True)
    _replicas(axes[0], record)
    _load(axes[1], record)
    _batch_size(axes[2], record)
    _latency(axes[3], record)
    axes[-1].set_xlabel("seconds since traffic started")
    for ax in axes:
        _phases(ax, record)
        ax.grid(alpha=0.3)
    fig.suptitle("Chiron operator on the dev cluster: the real operator, emulated vLLM pods")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _times(record: DemoRecord) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array([s.t_s for s in record.samples], dtype=float)


def _replicas(ax: Any, record: DemoRecord) -> None:
    t = _times(record)
    for role in ROLES:
        ready = [s.roles[role].ready for s in record.samples]
        desired = [s.roles[role].desired for s in record.samples]
        ax.step(t, ready, where="post", color=COLORS[role], label=f"{role} ready")
        ax.step(t, desired, where="post", color=COLORS[role], ls="--", alpha=0.6)
    ax.set_ylabel("replicas\n(dashed: desired)")
    ax.legend(loc="upper left", fontsize=8)


def _load(ax: Any, record: DemoRecord) -> None:
    arrivals = [r.spec.arrival_s for r in record.interactive]
    end = max([record.plan.end_s, *arrivals]) if arrivals else record.plan.end_s
    edges = np.arange(0.0, end + WINDOW_S, WINDOW_S)
    counts, _ = np.histogram(arrivals, bins=edges)
    ax.step(
        edges[:-1], counts / WINDOW_S, where="post", color="tab:blue", label="interactive req/s"
    )
    ax.set_ylabel("interactive req/s")
    twin = ax.twinx()
    t = _times(record)
    twin.plot(t, [s.batch_queued for s in record.samples], color="tab:orange", label="batch queued")
    twin.plot(
        t, [s.batch_in_flight for s in record.samples], color="tab:red", label="batch in flight"
    )
    twin.set_ylabel("batch requests")
    ax.legend(loc="upper left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)


def _batch_size(ax: Any, record: DemoRecord) -> None:
    t = _times(record)
    for role in ROLES:
        targets = [s.roles[role].target_batch_size or np.nan for s in record.samples]
        ceilings = [s.roles[role].batch_size or np.nan for s in record.samples]
        ax.step(t, targets, where="post", color=COLORS[role], label=f"{role} target")
        ax.step(t, ceilings, where="post", color=COLORS[role], ls="--", alpha=0.6)
    ax.set_ylabel("batch size: target\n(dashed: --max-num-seqs)")
    ax.legend(loc="upper left", fontsize=8)


def _latency(ax: Any, record: DemoRecord) -> None:
    done = [
        (r.spec.arrival_s, r.completion)
        for r in record.interactive
        if r.completion is not None and r.completion.ok
    ]
    if done:
        edges = np.arange(0.0, max(a for a, _ in done) + WINDOW_S, WINDOW_S)
        ttft = _windowed([(a, c.ttft_s) for a, c in done], edges)
        itl = _windowed([(a, c.mean_itl_s) for a, c in done], edges)
        ax.plot(edges[:-1], ttft, color="tab:blue", marker=".", label="TTFT p95")
        ax.plot(edges[:-1], itl, color="tab:green", marker=".", label="mean ITL p95")
    plan = record.plan
    ax.axhline(plan.ttft_slo_s, color="tab:blue", ls=":", label=f"TTFT SLO {plan.ttft_slo_s:g} s")
    ax.axhline(plan.itl_slo_s, color="tab:green", ls=":", label=f"ITL SLO {plan.itl_slo_s:g} s")
    ax.set_yscale("log")
    ax.set_ylabel("interactive latency, s\n(by arrival, 5 s windows)")
    ax.legend(loc="upper left", fontsize=8)


def _windowed(
    points: list[tuple[float, float | None]], edges: np.ndarray[Any, np.dtype[np.float64]]
) -> list[float]:
    out = []
    for low, high in itertools.pairwise(edges):
        values = [v for t, v in points if low <= t < high and v is not None]
        out.append(float(np.percentile(values, 95)) if values else np.nan)
    return out


def _phases(ax: Any, record: DemoRecord) -> None:
    plan = record.plan
    ax.axvspan(plan.surge_start_s, plan.surge_end_s, color="tab:blue", alpha=0.06)
    deadline = plan.batch_at_s + plan.batch_deadline_s
    ax.axvspan(plan.batch_at_s, deadline, color="tab:orange", alpha=0.06)
    ax.axvline(deadline, color="tab:orange", ls="--", lw=0.8)
