"""Fit the latency model to the vendored measured tables (numpy least squares).

Two kinds of source:

- Llama-3.1-8B, TP1, H100/A100 (`data/derived_latency_tables`): decode steps and prefills composed
  from measured vLLM kernels. The columns map onto the model directly (batch, total KV tokens,
  prompt tokens). Kernel sums miss norms, sampling and scheduling; `profiles.py` adds a per-step
  overhead for these profiles (see docs/LATENCY_MODEL.md).
- Llama-2-70B, TP 2/4/8, H100/A100 (`data/splitwise_sim_perf_model`): end-to-end vLLM timings,
  median over repetitions per (prompt, batch, output) configuration. Decode: `token_time` is the
  mean step over a run in which the batch's sequences advance in lockstep, so its mean context is
  `batch * (prompt + output / 2)` tokens. Prefill: the batch-1 rows (one prompt of T tokens, the
  model's form). Only output=128 runs are used (longer runs stopped early, so their context is
  unknown) and the TP2 batch-64 runs are dropped, as the data README advises. Batched prefills are
  kept as a check of how a simulator should charge several prompts.

Decode steps are fitted as a + b*batch + c*context. Prefills are fitted as a roofline,
max(floor, a + b*T + c*T^2): short prompts cost the floor (reading the weights once, plus the
fixed per-iteration costs), long ones the compute branch (linear GEMMs, quadratic attention).
The plain quadratic is fitted too, as the baseline the reference fits use. All fits are
non-negative least squares on relative error (`fitting.py`).

`python -m chiron_operator.perfmodel.calibration` prints the report tables;
`--write-profiles` regenerates the committed constants in `profiles.py`.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chiron_operator.perfmodel import coldstart, profiles
from chiron_operator.perfmodel.fitting import (
    FitResult,
    Floats,
    Table,
    fit,
    fit_prefill,
    knee_tokens,
    predict,
)
from chiron_operator.perfmodel.profiles import Coefficients

DATA_DIR = Path(__file__).parent / "data"
PROFILES_PY = Path(__file__).parent / "profiles.py"


def _read_columns(path: Path) -> dict[str, Floats]:
    with path.open(newline="") as f:
        header = next(csv.reader(f))
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return {name: data[:, i].astype(np.float64) for i, name in enumerate(header)}


def _prefill_table(tokens: Floats, ms: Floats) -> Table:
    return Table(np.column_stack([np.ones_like(tokens), tokens, tokens**2]), ms)


@dataclass(frozen=True, slots=True)
class ComposedSource:
    """Llama-3.1-8B TP1 step times composed from measured kernels (`h100` or `a100`)."""

    gpu: str

    def _path(self, kind: str) -> Path:
        name = f"llama31_8b_{self.gpu}_sxm_tp1_bf16_{kind}.csv"
        return DATA_DIR / "derived_latency_tables" / name

    def decode(self) -> Table:
        """Rows (batch, total KV tokens) -> composed decode step ms."""
        cols = _read_columns(self._path("decode_step"))
        batch, kv = cols["batch"], cols["total_kv_tokens"]
        return Table(
            np.column_stack([np.ones_like(batch), batch, kv]), cols["decode_step_ms_composed"]
        )

    def prefill(self) -> Table:
        """Rows (prompt tokens) -> composed prefill ms."""
        cols = _read_columns(self._path("prefill"))
        return _prefill_table(cols["prompt_tokens"], cols["prefill_ms_composed"])

    def reference_names(self) -> tuple[str, str]:
        """Rows of latency_model_fits.csv fitted the same way (decode, prefill)."""
        stem = f"llama31_8b_{self.gpu}_sxm_tp1"
        return f"{stem}_decode_composed", f"{stem}_prefill_composed_relfit"


@dataclass(frozen=True, slots=True)
class SplitwiseRuns:
    """Llama-2-70B configurations of one (hardware, TP): medians over repetitions."""

    prompt: Floats
    batch: Floats
    output: Floats
    prompt_ms: Floats
    token_ms: Floats


def _usable(row: dict[str, str]) -> bool:
    # Longer runs stopped early (unknown context); TP2 batch 64 looks like an OOM (data README).
    return int(row["token_size"]) == 128 and not (
        row["tensor_parallel"] == "2" and row["batch_size"] == "64"
    )


def splitwise_runs(hardware: str, tp: int) -> SplitwiseRuns:
    """The usable Llama-2-70B runs for `hardware` (e.g. "h100-80gb") at tensor parallel `tp`."""
    groups: dict[tuple[int, int, int], list[tuple[float, float]]] = defaultdict(list)
    with (DATA_DIR / "splitwise_sim_perf_model" / "perf_model.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            if (row["model"], row["hardware"], row["tensor_parallel"]) != (
                "llama2-70b",
                hardware,
                str(tp),
            ) or not _usable(row):
                continue
            key = (int(row["prompt_size"]), int(row["batch_size"]), int(row["token_size"]))
            groups[key].append((float(row["prompt_time"]), float(row["token_time"])))
    keys = sorted(groups)
    cfg = np.array(keys, dtype=np.float64)
    med = np.array([[statistics.median(col) for col in zip(*groups[k], strict=True)] for k in keys])
    return SplitwiseRuns(cfg[:, 0], cfg[:, 1], cfg[:, 2], med[:, 0], med[:, 1])


@dataclass(frozen=True, slots=True)
class SplitwiseSource:
    """Llama-2-70B end-to-end vLLM measurements from SplitwiseSim's perf model."""

    hardware: str
    tp: int

    def decode(self) -> Table:
        """Rows (batch, mean total context) -> measured ms per decode iteration."""
        r = splitwise_runs(self.hardware, self.tp)
        context = r.batch * (r.prompt + r.output / 2.0)
        return Table(np.column_stack([np.ones_like(r.batch), r.batch, context]), r.token_ms)

    def prefill(self) -> Table:
        """Rows (prompt tokens) of batch-1 runs -> measured prefill ms."""
        r = splitwise_runs(self.hardware, self.tp)
        one = r.batch == 1
        return _prefill_table(r.prompt[one], r.prompt_ms[one])

    def batched_prefill_mape(self, coef: Sequence[float]) -> float:
        """MAPE of charging a batch of B prompts as B single-prompt prefills (batch > 1 runs)."""
        r = splitwise_runs(self.hardware, self.tp)
        many = r.batch > 1
        one_prompt = predict(_prefill_table(r.prompt[many], r.prompt_ms[many]).x, coef)
        pred = r.batch[many] * one_prompt
        return float(np.mean(np.abs(pred - r.prompt_ms[many]) / r.prompt_ms[many]))

    def reference_names(self) -> tuple[str, str]:
        """Rows of latency_model_fits.csv for this source (its prefill row is a different fit)."""
        stem = f"splitwise_llama2_70b_{self.hardware}_tp{self.tp}"
        return f"{stem}_decode_measured", f"{stem}_prefill_measured_relfit"


Source = ComposedSource | SplitwiseSource

SOURCES: dict[str, Source] = {
    "llama31-8b-h100": ComposedSource("h100"),
    "llama31-8b-a100": ComposedSource("a100"),
    **{
        f"llama2-70b-{gpu}-tp{tp}": SplitwiseSource(f"{gpu}-80gb", tp)
        for gpu in ("a100", "h100")
        for tp in (2, 4, 8)
    },
}


@dataclass(frozen=True, slots=True)
class ProfileFit:
    """Decode and prefill (roofline) fits of one profile, the plain quadratic prefill fit it
    replaces, and the batched-prefill check where measured."""

    profile: str
    decode: FitResult
    prefill: FitResult
    prefill_quadratic: FitResult
    batched_prefill_mape: float | None


def calibrate(profile: str) -> ProfileFit:
    """Fit one profile from its source table."""
    source = SOURCES[profile]
    prefill_table = source.prefill()
    decode, prefill = fit(source.decode()), fit_prefill(prefill_table)
    batched = (
        source.batched_prefill_mape(prefill.coef) if isinstance(source, SplitwiseSource) else None
    )
    return ProfileFit(profile, decode, prefill, fit(prefill_table), batched)


def calibrate_all() -> list[ProfileFit]:
    """Fit every profile in `SOURCES`, in order."""
    return [calibrate(name) for name in SOURCES]


def reference_fits() -> dict[str, tuple[Coefficients, float]]:
    """latency_model_fits.csv as {fit name: ((a, b, c), MAPE)} (c per token^2 for prefills)."""
    out: dict[str, tuple[Coefficients, float]] = {}
    path = DATA_DIR / "derived_latency_tables" / "latency_model_fits.csv"
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            b = row["coef_b_per_seq"] or row["coef_b_per_token"]
            c = (
                row["coef_c_per_ctx_token"]
                or row["coef_c_per_token2"]
                or row["coef_c_per_token2_per_seq"]
            )
            out[row["fit"]] = ((float(row["coef_a"]), float(b), float(c)), float(row["mape"]))
    return out


def _g(value: float) -> str:
    return f"{value:.4g}"


def _quality(r: FitResult) -> list[str]:
    return [f"{r.mape:.1%}", f"{r.r2:.3f}", f"{r.max_ape:.1%}", str(r.n)]


def fits_markdown(fits: Sequence[ProfileFit]) -> str:
    """The decode and prefill fits as two Markdown tables (coefficients in ms, ms/seq, ms/token,
    ms/token^2; the prefill knee in tokens)."""
    rows = [
        "| profile | decode a | b | c | MAPE | R^2 | max APE | n |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows += [
        "| " + " | ".join([f.profile, *(_g(v) for v in f.decode.coef), *_quality(f.decode)]) + " |"
        for f in fits
    ]
    rows += [
        "",
        "| profile | prefill floor | a | b | c | knee T | MAPE | R^2 | max APE | n "
        "| quadratic MAPE | batched prefill MAPE |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in fits:
        a, b, c, floor = f.prefill.coef
        cells = [
            f.profile,
            *(_g(v) for v in (floor, a, b, c)),
            f"{knee_tokens(f.prefill.coef):.0f}",
        ]
        cells += _quality(f.prefill)
        cells.append(f"{f.prefill_quadratic.mape:.1%}")
        cells.append("n/a" if f.batched_prefill_mape is None else f"{f.batched_prefill_mape:.1%}")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def reference_markdown(fits: Sequence[ProfileFit]) -> str:
    """Our linear fits next to latency_model_fits.csv: MAPEs and the largest coefficient
    difference (prefill: our plain quadratic, the form the reference fits)."""
    ref = reference_fits()
    rows = [
        "| profile | decode MAPE ours / ref | max coef diff | quadratic prefill MAPE ours / ref "
        "| max coef diff | same prefill fit? |",
        "|---|---|---:|---|---:|---|",
    ]
    for f in fits:
        source = SOURCES[f.profile]
        cells = [f.profile]
        pairs = zip((f.decode, f.prefill_quadratic), source.reference_names(), strict=True)
        for ours, name in pairs:
            coef, mape = ref[name]
            diff = max(abs(o - r) / abs(r) for o, r in zip(ours.coef, coef, strict=True))
            cells += [f"{ours.mape:.1%} / {mape:.1%}", f"{diff:.0%}"]
        cells.append("yes" if isinstance(source, ComposedSource) else "no: all batches, one pass")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


BEGIN_MARK = (
    "# BEGIN GENERATED by `python -m chiron_operator.perfmodel.calibration --write-profiles`"
)
END_MARK = "# END GENERATED"


def _literal(coef: Sequence[float]) -> str:
    return "(" + ", ".join(repr(float(f"{v:.10g}")) for v in coef) + ")"


def render_constants(fits: Sequence[ProfileFit]) -> str:
    """The `FITTED_MS` block of profiles.py, markers included, formatted as ruff formats it."""
    lines = [
        BEGIN_MARK,
        "FITTED_MS: Final[dict[str, tuple[Coefficients, PrefillCoefficients]]] = {",
    ]
    for f in fits:
        lines += [
            f'    "{f.profile}": (',
            f"        {_literal(f.decode.coef)},",
            f"        {_literal(f.prefill.coef)},",
            "    ),",
        ]
    lines += ["}", END_MARK]
    return "\n".join(lines)


def write_profiles(fits: Sequence[ProfileFit], path: Path = PROFILES_PY) -> None:
    """Replace the generated block of `path` with constants rendered from `fits`."""
    text = path.read_text()
    pattern = re.compile(re.escape(BEGIN_MARK) + r".*?" + re.escape(END_MARK), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{path} has no generated block to replace")
    path.write_text(pattern.sub(lambda _: render_constants(fits), text, count=1))


def main(argv: Sequence[str] | None = None) -> int:
    """Print the calibration report; with --write-profiles, also rewrite the constants."""
    parser = argparse.ArgumentParser(prog="python -m chiron_operator.perfmodel.calibration")
    parser.add_argument("--write-profiles", action="store_true", help="rewrite profiles.py")
    args = parser.parse_args(argv)
    fits = calibrate_all()
    print("## Fits (decode: relative least squares; prefill: least MAPE)\n\n" + fits_markdown(fits))
    print("\n## Against latency_model_fits.csv\n\n" + reference_markdown(fits))
    print("\n## Profiles\n\n" + profiles.profiles_markdown())
    print("\n## Cold starts\n\n" + coldstart.presets_markdown())
    if args.write_profiles:
        write_profiles(fits)
        print(f"\nwrote {PROFILES_PY}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
