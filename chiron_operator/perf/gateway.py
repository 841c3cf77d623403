"""What the gateway costs: `python -m chiron_operator.perf.gateway` (`make bench-gateway`).

Two measurements against emulator pods on loopback, each piece its own process:

- the latency the gateway adds: time to first token of streamed requests through the gateway
  minus straight to the pods, at p50 and p99, at each offered rate (100 and 1,000 requests/s),
  both paths driven by the same generator with the same Poisson arrival times;
- the streamed chunks it relays per core: server-sent events relayed per CPU-second of the
  gateway process under many long streams.

Writes docs/GATEWAY_PERFORMANCE.md and a JSON of the same results (docs/benchmarks/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the pinned deps

from chiron_operator.gateway.metrics import REQUESTS
from chiron_operator.perf.gateway_load import (
    PROMPT,
    Load,
    body,
    closed_loop,
    open_loop,
    poisson_offsets,
)
from chiron_operator.perf.gateway_report import render
from chiron_operator.perf.gateway_results import (
    PathResult,
    Pooled,
    RateResult,
    Results,
    Setup,
    StreamResult,
    to_json,
)
from chiron_operator.perf.gateway_rig import MODEL, Rig, RigOptions, running

REQUEST_TIMEOUT_S: Final = 30.0
STREAM_TIMEOUT_S: Final = 120.0
_OUTCOME = re.compile(r'outcome="(\w+)"')


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob of a run; the defaults are `make bench-gateway`'s (a couple of minutes)."""

    rates: tuple[float, ...] = (100.0, 1000.0)
    duration_s: float = 10.0  # per path and rate, split over the rounds
    rounds: int = 4
    warmup_s: float = 1.0
    pods: int = 2
    max_num_seqs: int = 256
    max_tokens: int = 4
    latency_time_scale: float = 100.0
    stream_time_scale: float = 5.0
    stream_concurrency: tuple[int, ...] = (32, 128)
    stream_tokens: int = 500
    stream_duration_s: float = 10.0
    seed: int = 1


def _session() -> aiohttp.ClientSession:
    # No connection limit: an open loop must never wait for a pooled connection.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def _gateway_counts(session: aiohttp.ClientSession, rig: Rig) -> dict[str, float]:
    """The gateway's requests counter by outcome (queued, refused, ...), from its /metrics."""
    async with session.get(rig.gateway.url + "/metrics") as answer:
        text = await answer.text()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        match = _OUTCOME.search(line)
        if line.startswith(REQUESTS + "_total{") and match is not None:
            counts[match[1]] = counts.get(match[1], 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def _paths(rig: Rig) -> dict[str, tuple[str, ...]]:
    return {"direct": rig.pod_urls, "gateway": (rig.gateway.url,)}


async def _rounds(load: Load, rig: Rig, rate: float, s: Settings, bar: Any) -> dict[str, Pooled]:
    """Both paths, round after round, each round's arrival times shared by the two paths."""
    paths = _paths(rig)
    pooled = {name: Pooled() for name in paths}
    for r in range(s.rounds):
        offsets = poisson_offsets(rate, s.duration_s / s.rounds, s.seed + r)
        order = list(paths) if r % 2 == 0 else list(reversed(paths))
        for name in order:
            bar.set_postfix_str(f"round {r + 1}/{s.rounds}, {name}")
            start = rig.usage()
            run = await open_loop(load, paths[name], offsets, lambda: bar.update(1))
            pooled[name].add(run, rig.usage().minus(start))
    return pooled


async def _rate(rig: Rig, rate: float, s: Settings, progress: bool) -> RateResult:
    async with _session() as session:
        load = Load(session, body(MODEL, s.max_tokens), s.max_tokens + 1, REQUEST_TIMEOUT_S)
        warmup = poisson_offsets(rate, s.warmup_s, s.seed - 1)
        for urls in _paths(rig).values():
            await open_loop(load, urls, warmup, lambda: None)
        before = await _gateway_counts(session, rig)
        total = 2 * sum(
            len(poisson_offsets(rate, s.duration_s / s.rounds, s.seed + r)) for r in range(s.rounds)
        )
        with tqdm(total=total, desc=f"{rate:g} req/s", unit="req", disable=not progress) as bar:
            pooled = await _rounds(load, rig, rate, s, bar)
        after = await _gateway_counts(session, rig)
    queued, refused = (int(after.get(k, 0) - before.get(k, 0)) for k in ("queued", "refused"))
    direct = PathResult.of("direct", pooled["direct"])
    return RateResult(rate, direct, PathResult.of("gateway", pooled["gateway"]), queued, refused)


async def _streams(rig: Rig, s: Settings, progress: bool) -> tuple[StreamResult, ...]:
    results = []
    async with _session() as session:
        load = Load(session, body(MODEL, s.stream_tokens), s.stream_tokens + 1, STREAM_TIMEOUT_S)
        for concurrency in s.stream_concurrency:
            desc = f"{concurrency} streams"
            with tqdm(desc=desc, unit=" chunks", unit_scale=True, disable=not progress) as bar:
                start = rig.usage()
                run = await closed_loop(
                    load, rig.gateway.url, concurrency, s.stream_duration_s, bar.update
                )
                results.append(StreamResult.of(concurrency, run, rig.usage().minus(start)))
    return tuple(results)


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def setup_of(s: Settings) -> Setup:
    """The run's set-up as the document states it: this machine and `s`."""
    return Setup(
        cpu=_cpu_model(),
        cores=os.cpu_count() or 1,
        python=platform.python_version(),
        niceness=os.nice(0),
        pods=s.pods,
        max_num_seqs=s.max_num_seqs,
        latency_time_scale=s.latency_time_scale,
        stream_time_scale=s.stream_time_scale,
        max_tokens=s.max_tokens,
        prompt_tokens=len(PROMPT) // 4,
        duration_s=s.duration_s,
        rounds=s.rounds,
        warmup_s=s.warmup_s,
        stream_tokens=s.stream_tokens,
        stream_duration_s=s.stream_duration_s,
    )


def measure(s: Settings, workdir: Path, *, progress: bool = True) -> Results:
    """Start the pods and the gateway, measure, stop them; twice (latency, then streams)."""
    started = time.monotonic()
    latency = RigOptions(s.pods, s.max_num_seqs, s.latency_time_scale)
    with running(latency, workdir / "latency") as rig:
        rates = tuple(asyncio.run(_rate(rig, rate, s, progress)) for rate in s.rates)
    streaming = RigOptions(s.pods, s.max_num_seqs, s.stream_time_scale)
    with running(streaming, workdir / "streams") as rig:
        streams = asyncio.run(_streams(rig, s, progress))
    return Results(setup_of(s), rates, streams, time.monotonic() - started)


def parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m chiron_operator.perf.gateway", description=None)
    p.add_argument("--out", type=Path, default=Path("docs/GATEWAY_PERFORMANCE.md"))
    p.add_argument("--json", type=Path, default=Path("docs/benchmarks/gateway.json"))
    p.add_argument("--rate", type=float, action="append", help="requests/s (repeatable)")
    p.add_argument("--duration-s", type=float, default=d.duration_s, help="per path and rate")
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--warmup-s", type=float, default=d.warmup_s)
    p.add_argument("--pods", type=int, default=d.pods)
    p.add_argument("--streams", type=int, action="append", help="concurrent streams (repeatable)")
    p.add_argument("--stream-tokens", type=int, default=d.stream_tokens)
    p.add_argument("--stream-duration-s", type=float, default=d.stream_duration_s)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    d = Settings()
    return Settings(
        rates=tuple(args.rate or d.rates),
        duration_s=args.duration_s,
        rounds=max(1, args.rounds),
        warmup_s=args.warmup_s,
        pods=args.pods,
        stream_concurrency=tuple(args.streams or d.stream_concurrency),
        stream_tokens=args.stream_tokens,
        stream_duration_s=args.stream_duration_s,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chiron-gateway-bench-") as scratch:
        results = measure(settings_from(args), Path(scratch), progress=not args.no_progress)
    write_outputs(args.out, render(results), args.json, to_json(results))
    return 0


def write_outputs(markdown_path: Path, markdown: str, json_path: Path, document: Any) -> None:
    """A benchmark's page and its JSON, each with its folder made first."""
    for path, text in (
        (markdown_path, markdown),
        (json_path, json.dumps(document, indent=2) + "\n"),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {markdown_path} and {json_path}")


if __name__ == "__main__":
    raise SystemExit(main())
