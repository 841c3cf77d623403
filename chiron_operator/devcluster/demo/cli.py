"""`make demo` / `chiron-demo`: the real operator autoscaling emulated vLLM pods, in 3 minutes.

What runs (all on 127.0.0.1, all stopped at the end or on Ctrl-C):
- the dev cluster's API server, and its kubelet stand-in starting `chiron-emulator` processes
  as the operator's Deployments ask for them (a 5 s cold start each);
- a real Prometheus discovering the pods through file_sd and scraping every second;
- the pool's gateway (`chiron-gateway`, deployed by the operator, run by the kubelet stand-in
  in Kubernetes mode against the dev cluster, its SQLite batch store in the workdir): the pool's
  one entrypoint, whose batch queue per deadline and batch output lengths are the batch signals
  the operator reads by default (the pool has no `spec.batchQueue`);
- the operator itself, as a separate process: `python -m chiron_operator --kubeconfig ...
  --namespace llm --standalone`;
- the clients, through the gateway: an interactive surge replayed from the Azure conv trace,
  then a batch backlog submitted as one batch of the OpenAI Batch API, its completion window the
  deadline (see `workload` for the timeline, `backlog` for the batch).

The terminal shows a live table; `demo-out/summary.json` and `demo-out/demo.png` are written at
the end from what the clients measured, what the Batch API reported and what the pool's status
and Events say (`report` documents every summary field), with the batch's input, output and
error files (`batch-input.jsonl`, `batch-output.jsonl`, `batch-errors.jsonl`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Final

from chiron_operator.devcluster.cluster.operator_process import OperatorOptions, OperatorProcess
from chiron_operator.devcluster.cluster.stack import DevStack, StackOptions
from chiron_operator.devcluster.demo.plot import plot
from chiron_operator.devcluster.demo.report import DemoRecord, render_table, summarise
from chiron_operator.devcluster.demo.run import DemoClients, sample
from chiron_operator.devcluster.demo.traffic import gateway_endpoint
from chiron_operator.devcluster.demo.workload import (
    NAMESPACE,
    POOL,
    DemoPlan,
    emulator_args,
    pool_spec,
)
from chiron_operator.kube import KubeClient
from chiron_operator.kube.labels import LABEL_POOL

POOLS: Final = "/apis/chiron.io/v1alpha1/namespaces/{namespace}/llmservingpools"
READY_TIMEOUT_S: Final = 45.0
DRAIN_GRACE_CAP_S: Final = 600.0
CLEAR: Final = "\x1b[H\x1b[2J"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chiron-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="output directory")
    parser.add_argument(
        "--length", type=float, default=1.0, help="stretch (>1) or shrink (<1) the timeline"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="run the emulators this much faster than the latency model (SLOs scale with it)",
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and TSDB")
    return parser.parse_args(argv)


class _StopError(Exception):
    """SIGTERM, handled like Ctrl-C."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise _StopError


class Demo:
    """One demo run: start, drive, watch, report, stop."""

    def __init__(self, plan: DemoPlan, out: Path, workdir: Path) -> None:
        self.plan = plan
        self.out = out
        self.workdir = workdir
        self.record = DemoRecord(plan)
        self.stack = DevStack(
            StackOptions(
                workdir=workdir,
                namespaces=(NAMESPACE,),
                pods_namespace=NAMESPACE,
                emulator_args=emulator_args(plan),
                # Pods drain as the pool's spec.drain says, however long that is.
                max_grace_s=DRAIN_GRACE_CAP_S,
            )
        )
        self.operator: OperatorProcess | None = None
        self.gateway_counts: dict[str, int] = {}
        self.clients: DemoClients | None = None
        self.tty = sys.stdout.isatty()

    def run(self) -> dict[str, Any]:
        self.stack.start()
        kube = self.stack.client()
        options = OperatorOptions(self.stack.kubeconfig("operator"), namespaces=(NAMESPACE,))
        self.operator = OperatorProcess(options, self.workdir / "operator.log").start()
        assert self.stack.prometheus is not None
        spec = pool_spec(self.plan, self.stack.prometheus.url)
        body = {
            "apiVersion": "chiron.io/v1alpha1",
            "kind": "LLMServingPool",
            "metadata": {"name": POOL, "namespace": NAMESPACE},
            "spec": spec,
        }
        kube.request("POST", POOLS, params={"namespace": NAMESPACE}, body=body)
        self._say(f"pool {NAMESPACE}/{POOL} applied; waiting for its first pods and metrics")
        self._wait_ready(kube)
        self.clients = DemoClients(self.stack, self.plan, self.out)
        start = self.clients.start()
        self._watch(kube, start)
        self.gateway_counts = self.clients.gateway_counters()
        self.clients.finish()
        return self._report(kube)

    def _wait_ready(self, kube: KubeClient) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            status = _status(kube)
            fresh = any(
                c["type"] == "MetricsAvailable" and c["status"] == "True"
                for c in status.get("conditions") or []
            )
            roles = status.get("roles") or {}
            ready = all((roles.get(r) or {}).get("readyReplicas") for r in ("interactive", "mixed"))
            metrics = status.get("signals", {}).get("metricsAgeS") is not None
            if fresh and ready and metrics and _gateway_ready(kube):
                return
            time.sleep(0.5)
        raise TimeoutError("the pool did not become ready; see the logs under the workdir")

    def _watch(self, kube: KubeClient, start: float) -> None:
        assert self.clients is not None and self.stack.prometheus is not None
        last_line = 0.0
        while (now := time.time()) < start + self.plan.end_s:
            status = _status(kube)
            self.record.merge_decisions(status)
            current = sample(now - start, status, self.clients, self.stack.prometheus)
            self.record.samples.append(current)
            table = render_table(current, self.plan, self.clients.results)
            if self.tty:
                print(CLEAR + table, flush=True)
            elif now - last_line >= 10.0:
                print(" | ".join(table.splitlines()[i] for i in (0, -2, -1)), flush=True)
                last_line = now
            time.sleep(max(0.0, 1.0 - (time.time() - now)))

    def _report(self, kube: KubeClient) -> dict[str, Any]:
        assert self.clients is not None
        self.record.interactive = list(self.clients.results)
        self.record.batch = self.clients.batch_result()
        self.record.batch_total = self.clients.batch_total
        self.record.gateway = self.gateway_counts
        self.record.merge_decisions(_status(kube))
        events = kube.request(
            "GET", "/api/v1/namespaces/{namespace}/events", params={"namespace": NAMESPACE}
        )
        self.record.events = [e for e in events["items"] if e["involvedObject"]["name"] == POOL]
        summary = summarise(self.record)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        # Why it scaled, as the operator recorded it: every decision record and Event.
        decisions = sorted(self.record.decisions.values(), key=lambda d: str(d["time"]))
        (self.out / "decisions.json").write_text(json.dumps(decisions, indent=1) + "\n")
        (self.out / "events.json").write_text(json.dumps(self.record.events, indent=1) + "\n")
        plot(self.record, self.out / "demo.png")
        return summary

    def stop(self) -> None:
        """Stop every process the demo started; safe to call more than once."""
        if self.clients is not None:
            self.clients.stop()
        if self.operator is not None:
            self.operator.stop()
        self.stack.stop()

    def _say(self, text: str) -> None:
        print(text, flush=True)


def _gateway_ready(kube: KubeClient) -> bool:
    pods = kube.request(
        "GET",
        "/api/v1/namespaces/{namespace}/pods",
        params={"namespace": NAMESPACE},
        query={"labelSelector": f"{LABEL_POOL}={POOL}"},
    )
    return gateway_endpoint(list(pods.get("items") or [])) is not None


def _status(kube: KubeClient) -> dict[str, Any]:
    pool = kube.request("GET", POOLS + "/{name}", params={"namespace": NAMESPACE, "name": POOL})
    return dict(pool.get("status") or {})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = DemoPlan(time_scale=args.time_scale).scaled(args.length)
    workdir = Path(tempfile.mkdtemp(prefix="chiron-demo-"))
    demo = Demo(plan, args.out, workdir)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        summary = demo.run()
    except (KeyboardInterrupt, _StopError):
        print("\ninterrupted: stopping every process the demo started", flush=True)
        return 130
    finally:
        demo.stop()
        signal.signal(signal.SIGTERM, previous)
        if args.keep_workdir:
            print(f"logs and data kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'summary.json'} and {args.out / 'demo.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
