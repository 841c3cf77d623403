"""`chiron-gateway`: the OpenAI-compatible gateway in front of one Chiron pool.

Two ways to find the pool's pods:

- Kubernetes (in a cluster; what the operator deploys): `chiron-gateway --pool NAME
  --namespace NS` watches the pool's pods (role label, readiness, deletion) and the pool's status
  (each role's target batch size), with the in-cluster service account or `--kubeconfig`.
- Static endpoints (laptops, tests): `chiron-gateway --endpoint interactive=http://127.0.0.1:8001
  --endpoint mixed=http://127.0.0.1:8002,max-num-seqs=64 --port 8080`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import sys
from collections.abc import Sequence

import uvloop

from chiron_operator.batches.store.url import check_store_url
from chiron_operator.core.enums import Role
from chiron_operator.gateway.config import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_RETRIES,
    DEFAULT_PORT,
    DEFAULT_STORE,
    STORE_ENV,
    BatchCapacity,
    GatewayConfig,
    PodInfo,
    Share,
    parse_duration_s,
)
from chiron_operator.gateway.discovery import watch_pool
from chiron_operator.gateway.server import Watcher, build_app, build_gateway, serve
from chiron_operator.routing import DEADLINE_BUCKET_S, RoutingTuning

ENDPOINT_HELP = """\
a pod to route to, as ROLE=URL[,max-num-seqs=N][,name=NAME] (repeatable); ROLE is interactive,
mixed or batch; max-num-seqs is the pod's --max-num-seqs (its cap; without it the role's
--target caps the pod, and a pod with neither takes nothing); name defaults to ROLE-INDEX"""


def parse_endpoint(text: str, index: int) -> PodInfo:
    """One `--endpoint` value; ValueError saying what is wrong with it."""
    role_text, _, rest = text.partition("=")
    try:
        role = Role(role_text.strip())
    except ValueError:
        raise ValueError(f"--endpoint {text!r}: role must be interactive, mixed or batch") from None
    url, *options = rest.split(",")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--endpoint {text!r}: URL must start with http:// or https://")
    seqs: int | None = None
    name = f"{role.value}-{index}"
    for option in options:
        key, _, value = option.partition("=")
        if key == "max-num-seqs" and value.isdigit() and int(value) > 0:
            seqs = int(value)
        elif key == "name" and value:
            name = value
        else:
            raise ValueError(f"--endpoint {text!r}: unknown or invalid option {option!r}")
    return PodInfo(name, role, url.rstrip("/"), seqs)


def parse_target(text: str) -> tuple[Role, int]:
    role_text, _, value = text.partition("=")
    if role_text not in Role.__members__.values() or not value.isdigit():
        raise ValueError(f"--target {text!r}: expected ROLE=N, e.g. mixed=32")
    return Role(role_text), int(value)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chiron-gateway", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _pod_flags(p.add_argument_group("where the pods are"))
    _admission_flags(p.add_argument_group("admission"))
    _batch_flags(p.add_argument_group("the Batch API"))
    return p


def _pod_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--endpoint", action="append", default=[], help=ENDPOINT_HELP)
    g.add_argument(
        "--target",
        action="append",
        default=[],
        help="a role's target batch size "
        "as ROLE=N (static mode; in Kubernetes it comes from the pool's status)",
    )
    g.add_argument("--pool", default="", help="the LLMServingPool to serve (Kubernetes mode)")
    g.add_argument("--namespace", default="", help="the pool's namespace (Kubernetes mode)")
    g.add_argument("--kubeconfig", default="", help="kubeconfig (default: in-cluster)")
    g.add_argument(
        "--pod-name",
        default=os.environ.get("POD_NAME", ""),
        help="this gateway's pod, to find its share of the caps (default $POD_NAME)",
    )
    g.add_argument(
        "--pod-port-annotation",
        default="",
        help="read each pod's port from this "
        "annotation instead of its container port (local dev clusters)",
    )
    g.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="gateway replicas sharing the caps (static mode; in Kubernetes they are counted)",
    )
    g.add_argument("--replica-index", type=int, default=0, help="this replica's index, 0-based")


def _admission_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--max-queued",
        type=int,
        default=RoutingTuning().max_queued_interactive,
        help="interactive requests that may wait for a slot (default %(default)s)",
    )
    g.add_argument(
        "--max-queue-wait",
        default="30s",
        help="longest an interactive request waits before a 429 (default 30s)",
    )
    g.add_argument(
        "--mixed-reserve-slots",
        type=int,
        default=RoutingTuning().mixed_reserve_slots,
        help="slots of each mixed pod kept free of batch work (default %(default)s)",
    )
    g.add_argument(
        "--no-preempt-batch",
        action="store_true",
        help="never cut off batch work on a full pod for an interactive request (batch work "
        "then never borrows interactive slots either)",
    )
    g.add_argument(
        "--no-batch-on-interactive",
        action="store_true",
        help="never lend an interactive pod's spare slots to batch work",
    )
    g.add_argument(
        "--interactive-reserve-slots",
        type=int,
        default=RoutingTuning().interactive_reserve_slots,
        help="slots of each interactive pod batch work never borrows (default %(default)s)",
    )
    g.add_argument(
        "--batch-prefills-per-pod",
        type=int,
        default=RoutingTuning().batch_prefills_per_pod,
        help="batch requests a mixed or interactive pod may hold before their first token "
        "(0: no limit; default %(default)s)",
    )
    g.add_argument(
        "--default-batch-deadline",
        default="1h",
        help="deadline of a batch-class request that gives none (default 1h)",
    )
    g.add_argument(
        "--max-retries",
        type=int,
        default=DEFAULT_MAX_RETRIES,
        help="attempts on other pods after a pod gave no answer (default %(default)s)",
    )


def _batch_flags(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--store",
        default=os.environ.get(STORE_ENV, DEFAULT_STORE),
        help="where batches, files and the batch queue live: sqlite:///PATH (one replica) or "
        "postgresql://... (several replicas, one dispatching); 'none' serves no Batch API "
        f"(default ${STORE_ENV}, else {DEFAULT_STORE})",
    )
    g.add_argument(
        "--max-file-bytes",
        type=int,
        default=GatewayConfig().max_file_bytes,
        help="largest batch input file accepted (default %(default)s)",
    )
    g.add_argument(
        "--max-batch-requests",
        type=int,
        default=GatewayConfig().max_batch_requests,
        help="most requests in one batch input file (default %(default)s)",
    )
    g.add_argument(
        "--batch-max-attempts",
        type=int,
        default=GatewayConfig().batch_max_attempts,
        help="tries of a batch request that gets no answer or overload before it goes to "
        "the error file (default %(default)s)",
    )
    g.add_argument(
        "--deadline-bucket",
        default=f"{DEADLINE_BUCKET_S:g}s",
        help="how finely the exported batch queue groups deadlines (rounded down; default "
        "%(default)s): finer is more exact, coarser makes fewer series",
    )
    g.add_argument(
        "--batch-capacity",
        type=float,
        default=0.0,
        help="static mode: the most output tokens/s the pods could give batch work; a batch "
        "whose window needs more is warned in its metadata (Kubernetes: from the pool)",
    )


def config_from(args: argparse.Namespace) -> GatewayConfig:
    """The validated config; ValueError naming the flag at fault."""
    endpoints = tuple(parse_endpoint(text, i) for i, text in enumerate(args.endpoint))
    if not endpoints and not (args.pool and args.namespace):
        raise ValueError("give --endpoint ROLE=URL (static mode) or --pool and --namespace")
    if endpoints and args.pool:
        raise ValueError("--endpoint and --pool exclude each other")
    if not 0 <= args.replica_index < max(args.replicas, 1):
        raise ValueError("--replica-index must be in [0, --replicas)")
    counts = (
        args.max_queued,
        args.mixed_reserve_slots,
        args.interactive_reserve_slots,
        args.batch_prefills_per_pod,
    )
    if min(*counts, args.max_retries) < 0:
        raise ValueError(
            "--max-queued, --mixed-reserve-slots, --interactive-reserve-slots, "
            "--batch-prefills-per-pod and --max-retries must be >= 0"
        )
    if min(args.max_file_bytes, args.max_batch_requests, args.batch_max_attempts) < 1:
        raise ValueError(
            "--max-file-bytes, --max-batch-requests and --batch-max-attempts must be >= 1"
        )
    store = "" if args.store.strip().lower() == "none" else args.store.strip()
    if store:
        check_store_url(store)
    capacity = None
    if args.batch_capacity > 0:
        capacity = BatchCapacity(args.batch_capacity, "as given by --batch-capacity")
    tuning = RoutingTuning(
        max_queued_interactive=args.max_queued,
        max_queue_wait_s=parse_duration_s(args.max_queue_wait),
        mixed_reserve_slots=args.mixed_reserve_slots,
        preempt_batch=not args.no_preempt_batch,
        batch_on_interactive=not args.no_batch_on_interactive,
        interactive_reserve_slots=args.interactive_reserve_slots,
        batch_prefills_per_pod=args.batch_prefills_per_pod,
    )
    return GatewayConfig(
        host=args.host,
        port=args.port,
        pool=args.pool,
        namespace=args.namespace,
        endpoints=endpoints,
        routing=tuning,
        share=Share(max(args.replicas, 1), args.replica_index),
        default_batch_deadline_s=parse_duration_s(args.default_batch_deadline),
        max_retries=args.max_retries,
        connect_timeout_s=DEFAULT_CONNECT_TIMEOUT_S,
        pod_port_annotation=args.pod_port_annotation,
        kubeconfig=args.kubeconfig,
        pod_name=args.pod_name,
        store_url=store,
        deadline_bucket_s=parse_duration_s(args.deadline_bucket),
        max_file_bytes=args.max_file_bytes,
        max_batch_requests=args.max_batch_requests,
        batch_max_attempts=args.batch_max_attempts,
        batch_capacity=capacity,
    )


async def run(config: GatewayConfig, targets: dict[Role, int]) -> None:
    gateway = build_gateway(config)
    gateway.dispatcher.set_targets(targets)
    watcher: Watcher | None = None
    if not config.static:
        watcher = functools.partial(watch_pool, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(build_app(gateway, watcher), config.host, config.port, stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from(args)
        targets = dict(parse_target(t) for t in args.target)
    except ValueError as exc:
        print(f"chiron-gateway: {exc}", file=sys.stderr)
        return 2
    # uvloop: the gateway is event-loop bound. Measured with `make bench-gateway` at 1,000
    # requests/s on 2 cores: 3.3 ms added at p50 and 1.3 ms at p99, against 6.4 and 23 ms on
    # asyncio's default loop.
    uvloop.run(run(config, targets))
    return 0
