"""What the Batch API costs: `python -m chiron_operator.perf.batch` (`make bench-batch`).

Two measurements against the real `chiron-gateway` process, on its SQLite store (and on
PostgreSQL too when a server is given), everything on 127.0.0.1:

- intake: a 50,000-request input file uploaded with the official `openai` client, made a batch
  and queued, timed until the gateway's queue holds every request, with the gateway's memory
  from /proc meanwhile; its one pod takes nothing (no cap), so nothing drains the queue;
- dispatch: batches of 20,000 requests through the gateway to an upstream that answers at
  once, 64 at a time, each after the same requests sent straight to that upstream by a plain
  client 64 at a time: requests/s both ways and the gateway's CPU per request.

Writes docs/BATCH_PERFORMANCE.md and a JSON of the same results (docs/benchmarks/).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the pinned deps

from chiron_operator.perf import gateway as gateway_bench
from chiron_operator.perf.batch_client import Settings
from chiron_operator.perf.batch_dispatch import dispatch
from chiron_operator.perf.batch_intake import intake
from chiron_operator.perf.batch_load import input_lines
from chiron_operator.perf.batch_report import render
from chiron_operator.perf.batch_results import Results, Setup, to_json
from chiron_operator.perf.batch_rig import MODEL
from chiron_operator.perf.batch_store import describe_postgres, kinds

__all__ = ["Settings", "main", "measure", "setup_of"]


def setup_of(s: Settings, lines: Sequence[str]) -> Setup:
    """The run's set-up as the document states it: this machine, `s` and the input lines."""
    machine = gateway_bench.setup_of(gateway_bench.Settings())
    sizes = [len(line.encode()) + 1 for line in lines]  # with its newline
    return Setup(
        cpu=machine.cpu,
        cores=machine.cores,
        python=machine.python,
        niceness=machine.niceness,
        intake_requests=s.intake_requests,
        dispatch_requests=s.dispatch_requests,
        rounds=s.rounds,
        concurrency=s.concurrency,
        line_bytes_min=min(sizes),
        line_bytes_mean=statistics.fmean(sizes),
        line_bytes_max=max(sizes),
        poll_s=s.poll_s,
        postgres=describe_postgres(s.postgres_url) if s.postgres_url else "",
    )


def _bar(desc: str, total: int, progress: bool) -> Any:
    return tqdm(total=total, desc=desc, unit="req", disable=not progress)


def measure(s: Settings, workdir: Path, *, progress: bool = True) -> Results:
    """Every store's intake, then every store's dispatch rounds with the direct ones."""
    started_s = time.monotonic()
    lines = input_lines(max(s.intake_requests, s.dispatch_requests), MODEL, s.seed)
    intake_lines, dispatch_lines = lines[: s.intake_requests], lines[: s.dispatch_requests]
    intakes, dispatches, directs = [], [], []
    for kind in kinds(s.postgres_url):
        with _bar(f"{kind.name} intake", len(intake_lines), progress) as bar:
            intakes.append(intake(kind, intake_lines, s, workdir / f"intake-{kind.name}", bar))
    for kind in kinds(s.postgres_url):
        total = s.rounds * len(dispatch_lines)
        with _bar(f"{kind.name} batches", total, progress) as bar:
            where = workdir / f"dispatch-{kind.name}"
            done, direct_rounds = dispatch(kind, dispatch_lines, s, where, bar)
        dispatches.append(done)
        directs += direct_rounds
    setup = setup_of(s, intake_lines)
    elapsed_s = time.monotonic() - started_s
    return Results(setup, tuple(intakes), tuple(directs), tuple(dispatches), elapsed_s)


def parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m chiron_operator.perf.batch", description=None)
    p.add_argument("--out", type=Path, default=Path("docs/BATCH_PERFORMANCE.md"))
    p.add_argument("--json", type=Path, default=Path("docs/benchmarks/batch.json"))
    p.add_argument("--intake-requests", type=int, default=d.intake_requests)
    p.add_argument("--dispatch-requests", type=int, default=d.dispatch_requests)
    p.add_argument("--rounds", type=int, default=d.rounds, help="dispatch rounds per store")
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="the pod's cap")
    p.add_argument(
        "--postgres-url",
        default=d.postgres_url,
        help="a PostgreSQL server (a superuser's URL to its `postgres` database) to measure "
        "as well: each run gets a new database on it, dropped afterwards",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        intake_requests=max(1, args.intake_requests),
        dispatch_requests=max(1, args.dispatch_requests),
        rounds=max(1, args.rounds),
        concurrency=max(1, args.concurrency),
        postgres_url=args.postgres_url,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chiron-batch-bench-") as scratch:
        results = measure(settings_from(args), Path(scratch), progress=not args.no_progress)
    gateway_bench.write_outputs(args.out, render(results), args.json, to_json(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
