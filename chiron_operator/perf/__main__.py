"""`python -m chiron_operator.perf --out docs/OPERATOR_PERFORMANCE.md` (`make bench-operator`)."""

from __future__ import annotations

import argparse
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path

from chiron_operator.perf import memory, ticks
from chiron_operator.perf.report import Machine, render

POD_COUNTS = (8, 64, 256)
POOLS = 500


def _machine() -> Machine:
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = sum(1 for line in cpuinfo.read_text().splitlines() if line.startswith("processor"))
    return Machine(model, cores, platform.python_version())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chiron_operator.perf")
    parser.add_argument("--out", type=Path, default=Path("docs/OPERATOR_PERFORMANCE.md"))
    parser.add_argument("--pods", type=int, nargs="*", default=list(POD_COUNTS))
    parser.add_argument("--pools", type=int, default=POOLS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chiron-perf-") as scratch:
        root = Path(scratch)
        costs = []
        for pods in args.pods:
            print(f"ticks of a pool of {pods} pods ...", flush=True)
            costs.append(ticks.measure(pods, root / f"pods-{pods}"))
            print(f"  {costs[-1]}", flush=True)
        print(f"memory with {args.pools} pools ...", flush=True)
        mem = memory.measure(args.pools, root / "memory")
        print(f"  {mem}", flush=True)
    args.out.write_text(render(_machine(), costs, mem))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
