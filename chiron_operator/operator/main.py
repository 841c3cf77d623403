"""`python -m chiron_operator`: parse flags, serve /healthz and /metrics, run kopf."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

import kopf

from chiron_operator.kube import KubeClient
from chiron_operator.operator import health
from chiron_operator.operator.context import (
    DEFAULT_GATEWAY_CLUSTER_ROLE,
    DEFAULT_GATEWAY_IMAGE,
    GatewaySettings,
    OperatorContext,
)
from chiron_operator.operator.handlers import register
from chiron_operator.operator.pod_policy import add_pod_policy_flags, pod_policy
from chiron_operator.operator.prometheus_flags import (
    add_prometheus_flags,
    fetch_limiter,
    prometheus_settings,
)

DEFAULT_PEERING = "chiron-operator"
# The chart sets it to the operator's own image, so the gateways run the operator's release.
GATEWAY_IMAGE_ENV = "CHIRON_GATEWAY_IMAGE"
# kopf reads these in a --namespace value as a pattern (globs, negations, lists).
GLOB_CHARACTERS = "!*?,"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="chiron-operator", description="SLO-aware autoscaling of vLLM LLMServingPools."
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", action="append", default=[], help="watch this namespace")
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument("--metrics-port", type=int, default=8080, help="/metrics and /healthz")
    parser.add_argument("--metrics-host", default="0.0.0.0", help="address to serve them on")
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--peering", help="kopf peering name (leader election), mandatory")
    peering.add_argument("--standalone", action="store_true", help="no peering at all")
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority (highest active replica leads; default: derived from POD_ID)",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster or $KUBECONFIG)")
    parser.add_argument("--log-format", choices=("plain", "json"), default="plain")
    parser.add_argument("--verbose", action="store_true")
    _gateway_flags(parser.add_argument_group("the pools' gateways"))
    add_pod_policy_flags(parser.add_argument_group("what pools may run"))
    add_prometheus_flags(parser.add_argument_group("the pools' Prometheus"))
    args = parser.parse_args(argv)
    if not args.namespace and not args.all_namespaces:
        args.all_namespaces = True
    return args


def _gateway_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--gateway-image",
        default=os.environ.get(GATEWAY_IMAGE_ENV) or DEFAULT_GATEWAY_IMAGE,
        help=f"image of the pools' chiron-gateway where spec.gateway.image is unset (default: "
        f"${GATEWAY_IMAGE_ENV}, else {DEFAULT_GATEWAY_IMAGE}, this release's image)",
    )
    group.add_argument(
        "--gateway-cluster-role",
        default=DEFAULT_GATEWAY_CLUSTER_ROLE,
        help="ClusterRole each pool's gateway ServiceAccount is bound to in the pool's "
        "namespace (default %(default)s; the chart creates it)",
    )


def gateway_settings(args: argparse.Namespace) -> GatewaySettings:
    """The gateway settings the flags (and $CHIRON_GATEWAY_IMAGE) give."""
    return GatewaySettings(image=args.gateway_image, cluster_role=args.gateway_cluster_role)


def _logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.INFO
    if args.log_format == "json":
        fmt = (
            '{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}'
        )
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt)


def exact_namespaces(args: argparse.Namespace) -> bool:
    """Whether the operator serves a fixed list of namespaces, none of them a kopf glob."""
    return not args.all_namespaces and not any(
        set(name) & set(GLOB_CHARACTERS) for name in args.namespace
    )


def default_priority(identity: str) -> int:
    """A stable per-replica peering priority in [1, 2**20].

    kopf pauses every peer when the highest priority is shared, so replicas of one Deployment
    (same flags) must differ; a hash of the pod's name makes them differ without coordination.
    """
    digest = hashlib.sha256(identity.encode()).digest()
    return 1 + int.from_bytes(digest[:4], "big") % (1 << 20)


def _token() -> str | None:
    path = os.environ.get("CHIRON_PROMETHEUS_TOKEN_FILE")
    return Path(path).read_text().strip() if path else None


async def serve(
    args: argparse.Namespace,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
) -> None:
    """Run one operator until `stop_flag` is set (or forever)."""
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's login reads it too
    ctx = OperatorContext(
        kube=KubeClient.from_environment(args.kubeconfig),
        prometheus=prometheus_settings(args, _token()),
        fetches=fetch_limiter(args),
        gateway=gateway_settings(args),
        pod_policy=pod_policy(args),
    )
    ready = ready_flag or threading.Event()
    registry = kopf.OperatorRegistry()
    register(
        registry,
        ctx,
        mandatory_peering=args.peering is not None,
        fixed_namespaces=exact_namespaces(args),
    )
    runner = await health.start(ctx.telemetry, ready, args.metrics_host, args.metrics_port)
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=args.all_namespaces,
            namespaces=args.namespace,
            standalone=args.standalone,
            peering_name=args.peering or DEFAULT_PEERING,
            priority=args.priority
            if args.priority is not None
            else default_priority(os.environ.get("POD_ID") or socket.gethostname()),
            stop_flag=stop_flag,
            ready_flag=ready,
        )
    finally:
        await runner.cleanup()
        ctx.kube.close()
        ctx.fetches.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _logging(args)
    asyncio.run(serve(args))
    return 0
