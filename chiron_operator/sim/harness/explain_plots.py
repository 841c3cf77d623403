"""The side-by-side figure of `explain`: one column per run, one row per thing that explains a
loss. matplotlib (Agg), imported only when a figure is drawn."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.core.tuning import SloTargets
from chiron_operator.routing import pod_cap_seqs
from chiron_operator.sim.engine import SimResult
from chiron_operator.sim.harness.plots import (
    ROLE_COLORS,
    minutes,
    new_figure,
    save_figure,
    windowed,
)
from chiron_operator.sim.records import TickRecord
from chiron_operator.sim.router import RoutingMode

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ROWS = ("load", "instances", "batch size", "latency", "batch on mixed")
LATENCY_WINDOW_S = 60.0


def plot_side_by_side(
    runs: Sequence[tuple[str, SimResult]], slo: SloTargets, path: Path, *, title: str
) -> Path:
    """The figure: columns are `runs` (name, result), rows are `ROWS`, shared time axes."""
    figure = new_figure(len(ROWS), len(runs), size=(6.0 * len(runs), 2.4 * len(ROWS)))
    axes = np.asarray(figure.axes).reshape(len(ROWS), len(runs))
    for column, (name, result) in enumerate(runs):
        _load(axes[0, column], result)
        _instances(axes[1, column], result)
        _batch_sizes(axes[2, column], result)
        _latency(axes[3, column], result, slo)
        _batch_on_mixed(axes[4, column], result)
        summary = result.summary
        axes[0, column].set_title(
            f"{name}: interactive {summary.interactive_slo_attainment:.2%}, "
            f"{summary.gpu_hours:.2f} GPU-h",
            fontsize=9,
        )
        axes[-1, column].set_xlabel("time (min)")
    for row, label in enumerate(ROWS):
        axes[row, 0].set_ylabel(label, fontsize=8)
    for ax in axes.flat[1:]:
        ax.sharex(axes.flat[0])
    figure.suptitle(title, fontsize=9)
    return save_figure(figure, path)


def _load(ax: Axes, result: SimResult) -> None:
    ticks = result.ticks
    t = minutes([k.time_s for k in ticks])
    ax.plot(t, [k.arrivals_per_s for k in ticks], color="black", lw=0.8, label="arrivals/s")
    other = ax.twinx()
    other.plot(t, [k.pool_queue for k in ticks], color="tab:red", lw=0.8, label="gateway queue")
    other.plot(t, [k.waiting_on_pods for k in ticks], color="tab:orange", lw=0.8, label="at pods")
    other.tick_params(labelsize=7)
    lines = ax.get_lines() + other.get_lines()
    ax.legend(lines, [str(line.get_label()) for line in lines], fontsize=6, loc="upper left")


def _instances(ax: Axes, result: SimResult) -> None:
    ticks = result.ticks
    t = minutes([k.time_s for k in ticks])
    stacks = [[k.ready.get(r, 0) for k in ticks] for r in Role]
    colors = [ROLE_COLORS[r] for r in Role]
    ax.stackplot(t, *stacks, labels=[r.value for r in Role], colors=colors, alpha=0.6, step="post")
    total = [sum(k.ready.get(r, 0) + k.starting.get(r, 0) for r in Role) for k in ticks]
    ax.step(t, total, where="post", color="black", lw=0.8, label="with starting")
    ax.legend(fontsize=6, loc="upper left")


def _batch_sizes(ax: Axes, result: SimResult) -> None:
    """The batch size each role runs: with the gateway, its cap, min(ceiling, target)."""
    ticks = result.ticks
    t = minutes([k.time_s for k in ticks])
    gateway = result.config.routing is RoutingMode.CHIRON
    for role in Role:
        if not any(k.ready.get(role, 0) for k in ticks):
            continue
        color = ROLE_COLORS[role]
        cap = [_cap(k, role, gateway=gateway) for k in ticks]
        ax.step(t, cap, where="post", color=color, lw=1.0, label=f"{role.value} batch size")
        running = [
            k.running.get(role, 0) / k.ready[role] if k.ready.get(role, 0) else math.nan
            for k in ticks
        ]
        ax.plot(t, running, color=color, ls=":", lw=0.8, label=f"{role.value} running/pod")
    ax.set_yscale("log", base=2)
    ax.legend(fontsize=6, loc="upper left")


def _cap(tick: TickRecord, role: Role, *, gateway: bool) -> int:
    ceiling = tick.max_num_seqs.get(role, 0)
    return pod_cap_seqs(ceiling, tick.targets.get(role), 1, 0) if gateway else ceiling


def _latency(ax: Axes, result: SimResult, slo: SloTargets) -> None:
    interactive = [r for r in result.requests if r.request_class is RequestClass.INTERACTIVE]
    if not interactive:
        ax.text(0.5, 0.5, "no interactive requests", transform=ax.transAxes, ha="center")
        return
    arrival = np.array([r.arrival_s for r in interactive])
    q = slo.percentile_ratio * 100
    for name, values, target, color in (
        ("TTFT / SLO", [r.ttft_s for r in interactive], slo.interactive_ttft_s, "tab:blue"),
        ("mean ITL / SLO", [r.mean_itl_s for r in interactive], slo.interactive_itl_s, "tab:red"),
    ):
        done = [v if r.completed else math.inf for v, r in zip(values, interactive, strict=True)]
        data = np.asarray(done, dtype=np.float64) / target
        # A request never served counts as far over its SLO, not as missing data.
        data = np.where(np.isfinite(data), data, 100.0)
        starts, p = windowed(arrival, data, LATENCY_WINDOW_S, q)
        ax.plot(minutes(starts), p, color=color, lw=0.9, label=f"{name} p{q:g}")
    ax.axhline(1.0, color="black", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.legend(fontsize=6, loc="upper left")


def _batch_on_mixed(ax: Axes, result: SimResult) -> None:
    ticks = result.ticks
    t = minutes([k.time_s for k in ticks])
    ax.plot(t, [k.batch_queue for k in ticks], color="tab:orange", lw=0.8, label="batch queue")
    mixed = [k.observations.get("mixed_utilization_ratio", math.nan) for k in ticks]
    other = ax.twinx()
    other.plot(t, mixed, color="tab:purple", lw=0.8, label="mixed utilisation")
    other.set_ylim(0, 1.05)
    other.tick_params(labelsize=7)
    lines = ax.get_lines() + other.get_lines()
    ax.legend(lines, [str(line.get_label()) for line in lines], fontsize=6, loc="upper left")
