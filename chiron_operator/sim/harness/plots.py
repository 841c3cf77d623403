"""PNG plots of a run (load, replicas, batch sizes, latency against the SLOs) and of a bench.

matplotlib with the non-interactive Agg backend, imported lazily: nothing else in the
simulator needs it, and `import chiron_operator.sim` stays light.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chiron_operator.core.enums import RequestClass, Role
from chiron_operator.core.tuning import SloTargets
from chiron_operator.sim.harness.report_goals import attainment
from chiron_operator.sim.records import RequestRecord, TickRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ROLE_COLORS = {Role.INTERACTIVE: "tab:blue", Role.MIXED: "tab:purple", Role.BATCH: "tab:orange"}
POLICY_MARKERS = {
    "chiron": ("*", "tab:red"),
    "chiron-services": ("X", "tab:orange"),
    "hindsight": ("h", "tab:cyan"),
    "static": ("s", "tab:gray"),
    "hpa": ("o", "tab:blue"),
    "keda": ("^", "tab:green"),
    "kpa": ("v", "tab:olive"),
    "llumnix": ("D", "tab:purple"),
    "llumnix-tuned": ("P", "tab:pink"),
}


def _ratio_ticks(ax: Axes) -> None:
    """Labels at powers of two ("0.5x", "1x", "2x"...) on a log axis: matplotlib's default
    minor labels (2x10^0, 3x10^0...) run into each other."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # noqa: PLC0415

    ax.xaxis.set_major_locator(FixedLocator([2.0**k for k in range(-4, 7)]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def new_figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (9.0, 3.6)) -> Figure:
    import matplotlib  # noqa: PLC0415 -- optional dependency, loaded only to plot

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # noqa: PLC0415

    figure = Figure(figsize=size, layout="constrained")
    figure.subplots(rows, cols, squeeze=False)
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def minutes(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64) / 60.0


def plot_load(ticks: Sequence[TickRecord], path: Path, title: str = "") -> Path:
    """Arrival rate, requests in the system and the batch queue over time."""
    figure = new_figure()
    ax: Axes = figure.axes[0]
    t = minutes([k.time_s for k in ticks])
    ax.plot(t, [k.arrivals_per_s for k in ticks], color="tab:blue", label="arrivals / s")
    ax.set_xlabel("time (min)")
    ax.set_ylabel("arrivals per second")
    other = ax.twinx()
    other.plot(t, [k.in_system for k in ticks], color="tab:red", label="in system")
    other.plot(t, [k.batch_queue for k in ticks], color="tab:orange", label="batch queue")
    other.set_ylabel("requests")
    lines = ax.get_lines() + other.get_lines()
    ax.legend(lines, [str(line.get_label()) for line in lines], loc="upper left", fontsize=8)
    ax.set_title(title or "load")
    return save_figure(figure, path)


def plot_replicas(
    ticks: Sequence[TickRecord],
    path: Path,
    title: str = "",
    oracle: tuple[float, Sequence[float]] | None = None,
) -> Path:
    """Ready instances per role (stacked), starting ones, and the oracle's need if given."""
    figure = new_figure()
    ax: Axes = figure.axes[0]
    t = minutes([k.time_s for k in ticks])
    stacks = [[k.ready.get(r, 0) for k in ticks] for r in Role]
    ax.stackplot(
        t,
        *stacks,
        labels=[f"{r.value} ready" for r in Role],
        colors=[ROLE_COLORS[r] for r in Role],
        alpha=0.6,
        step="post",
    )
    starting = [sum(k.starting.get(r, 0) for r in Role) for k in ticks]
    ready = [sum(k.ready.get(r, 0) for r in Role) for k in ticks]
    ax.step(t, np.add(ready, starting), where="post", color="black", lw=1, label="with starting")
    if oracle is not None:
        bin_s, need = oracle
        edges = minutes(np.arange(len(need)) * bin_s)
        ax.step(edges, need, where="post", color="tab:green", ls="--", label="oracle need")
    ax.set_xlabel("time (min)")
    ax.set_ylabel("instances")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "replicas per role")
    return save_figure(figure, path)


def plot_batch_sizes(ticks: Sequence[TickRecord], path: Path, title: str = "") -> Path:
    """--max-num-seqs per role (as decided) and mean running sequences per ready pod."""
    figure = new_figure()
    ax: Axes = figure.axes[0]
    t = minutes([k.time_s for k in ticks])
    for role in Role:
        if not any(k.ready.get(role, 0) or k.desired.get(role, 0) for k in ticks):
            continue
        color = ROLE_COLORS[role]
        ax.step(
            t,
            [k.max_num_seqs.get(role, 0) for k in ticks],
            where="post",
            color=color,
            label=f"{role.value} --max-num-seqs",
        )
        running = [
            k.running.get(role, 0) / k.ready[role] if k.ready.get(role, 0) else math.nan
            for k in ticks
        ]
        ax.plot(t, running, color=color, ls=":", label=f"{role.value} running / pod")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("time (min)")
    ax.set_ylabel("sequences")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "batch sizes")
    return save_figure(figure, path)


def windowed(
    times: np.ndarray, values: np.ndarray, window_s: float, q: float
) -> tuple[np.ndarray, np.ndarray]:
    if not times.size:
        return times, values
    index = (times // window_s).astype(np.int64)
    starts, out = [], []
    for w in np.unique(index):
        chosen = values[index == w]
        chosen = chosen[np.isfinite(chosen)]
        if chosen.size:
            starts.append(w * window_s)
            out.append(float(np.percentile(chosen, q)))
    return np.asarray(starts), np.asarray(out)


def plot_latency(
    records: Sequence[RequestRecord],
    slo: SloTargets,
    path: Path,
    title: str = "",
    window_s: float = 30.0,
) -> Path:
    """Interactive TTFT and mean ITL at the SLO percentile per arrival window, vs the SLOs."""
    figure = new_figure(2, 1, size=(9.0, 5.6))
    interactive = [r for r in records if r.request_class is RequestClass.INTERACTIVE]
    arrival = np.array([r.arrival_s for r in interactive])
    q = slo.percentile_ratio * 100
    for ax, name, values, target in (
        (
            figure.axes[0],
            "TTFT",
            [r.ttft_s if r.completed else math.inf for r in interactive],
            slo.interactive_ttft_s,
        ),
        (
            figure.axes[1],
            "mean ITL",
            [r.mean_itl_s if r.completed else math.inf for r in interactive],
            slo.interactive_itl_s,
        ),
    ):
        data = np.array(values, dtype=np.float64)
        data = np.where(np.isinf(data), np.nanmax(data[np.isfinite(data)], initial=target), data)
        starts, p = windowed(arrival, data, window_s, q)
        ax.plot(minutes(starts), p, color="tab:blue", label=f"p{q:g} per {window_s:g} s")
        ax.axhline(target, color="tab:red", ls="--", label=f"SLO {target:g} s")
        ax.set_yscale("log")
        ax.set_ylabel(f"{name} (s)")
        ax.legend(loc="upper left", fontsize=8)
    figure.axes[1].set_xlabel("arrival time (min)")
    figure.axes[0].set_title(title or "interactive latency vs SLO")
    return save_figure(figure, path)


def plot_run(
    ticks: Sequence[TickRecord],
    records: Sequence[RequestRecord],
    slo: SloTargets,
    out_dir: Path,
    *,
    title: str = "",
    oracle: tuple[float, Sequence[float]] | None = None,
) -> list[Path]:
    """Every per-run plot into `out_dir`."""
    prefix = f"{title}: " if title else ""
    return [
        plot_load(ticks, out_dir / "load.png", f"{prefix}load"),
        plot_replicas(ticks, out_dir / "replicas.png", f"{prefix}replicas per role", oracle),
        plot_batch_sizes(ticks, out_dir / "batch_sizes.png", f"{prefix}batch sizes"),
        plot_latency(records, slo, out_dir / "latency.png", f"{prefix}latency vs SLO"),
    ]


# -- bench ----------------------------------------------------------------------------------


def plot_bench_summary(document: Mapping[str, Any], path: Path, target: float = 0.99) -> Path:
    """GPU-hours (over the hindsight reference's) against attainment, one panel per scenario."""
    scenarios = document["scenarios"]
    cols = min(3, len(scenarios))
    rows = math.ceil(len(scenarios) / cols)
    figure = new_figure(rows, cols, size=(4.2 * cols, 3.4 * rows))
    for ax, scenario in zip(figure.axes, scenarios, strict=False):
        reference = scenario["hindsight"]
        points = {**scenario["policies"], "hindsight": reference}
        for name, metrics in points.items():
            marker, color = POLICY_MARKERS.get(name, ("x", "black"))
            ax.scatter(
                metrics["gpu_hours"] / reference["gpu_hours"],
                100 * attainment(metrics),
                marker=marker,
                color=color,
                s=90 if name == "chiron" else 45,
                label=name,
                zorder=3,
            )
        ax.axhline(100 * target, color="tab:red", ls=":", lw=1)
        ax.axvline(1.0, color="tab:cyan", ls="--", lw=1)
        ax.set_xscale("log")
        _ratio_ticks(ax)
        ax.set_title(scenario["name"], fontsize=10)
        ax.set_xlabel("GPU-hours / hindsight reference")
        ax.set_ylabel("attainment % (min of classes)")
        ax.grid(alpha=0.3)
    for ax in figure.axes[len(scenarios) :]:
        ax.set_visible(False)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    return save_figure(figure, path)


def plot_bench_instances(scenario: Mapping[str, Any], path: Path) -> Path:
    """Instances over time of every policy of one bench scenario, against the oracle's need."""
    figure = new_figure(size=(9.0, 3.6))
    ax: Axes = figure.axes[0]
    for name, series in scenario["series"].items():
        _, color = POLICY_MARKERS.get(name, ("x", "black"))
        ax.step(
            minutes(series["time_s"]),
            series["instances"],
            where="post",
            color=color,
            lw=2.2 if name in {"chiron", "hindsight"} else 1.0,
            label=name,
        )
    need = scenario["oracle_series"]
    edges = minutes(np.arange(len(need["instances"])) * need["bin_s"])
    ax.step(edges, need["instances"], where="post", color="tab:green", ls="--", label="fluid need")
    load = ax.twinx()
    chiron = scenario["series"].get("chiron")
    if chiron is not None:
        load.plot(
            minutes(chiron["time_s"]), chiron["arrivals_per_s"], color="black", alpha=0.25, lw=0.8
        )
        load.set_ylabel("arrivals / s (grey)")
    ax.set_xlabel("time (min)")
    ax.set_ylabel("instances (ready + starting)")
    ax.set_title(f"{scenario['name']}: instances per policy")
    ax.legend(loc="upper left", fontsize=7, ncols=2)
    return save_figure(figure, path)
