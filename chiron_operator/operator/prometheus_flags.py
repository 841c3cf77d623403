"""The operator's Prometheus flags: what the cluster admin allows the pools' fetches.

A pool names its own Prometheus, so these are the admin's side of that choice: which URLs may
receive the operator's own token, which otherwise refused networks (loopback, link-local, the
API server) a pool's Prometheus may sit in, whether pools may run raw PromQL, and how long and
how many fetches may run. Each repeatable flag defaults from a comma-separated environment
variable, which is how the chart passes lists.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Final

from chiron_operator.metrics.destination import DestinationPolicy, check_token_url
from chiron_operator.metrics.source import DEFAULT_DEADLINE_S
from chiron_operator.operator.context import PrometheusSettings
from chiron_operator.operator.fetching import (
    DEFAULT_FETCH_WORKERS,
    DEFAULT_FETCHES_PER_NAMESPACE,
    FetchLimiter,
)

TOKEN_URLS_ENV: Final = "CHIRON_PROMETHEUS_TOKEN_URLS"
ALLOW_CIDRS_ENV: Final = "CHIRON_PROMETHEUS_ALLOW_CIDRS"

log = logging.getLogger(__name__)


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def add_prometheus_flags(group: argparse._ArgumentGroup) -> None:
    """The flags of the pools' Prometheus access."""
    group.add_argument(
        "--prometheus-token-url",
        action="append",
        type=check_token_url,
        default=None,
        help="a Prometheus base URL the operator's own token (CHIRON_PROMETHEUS_TOKEN_FILE) "
        "may be sent to, and URLs under its path; repeatable (default: "
        f"${TOKEN_URLS_ENV}, comma-separated). A pool naming any other URL needs its own "
        "spec.prometheus.authSecretRef",
    )
    group.add_argument(
        "--prometheus-allow-cidr",
        action="append",
        default=None,
        help="a network pools' Prometheus may be in although it is loopback, link-local or "
        f"the API server's; repeatable (default: ${ALLOW_CIDRS_ENV}, comma-separated)",
    )
    group.add_argument(
        "--allow-pool-promql",
        action="store_true",
        help="run pools' raw spec.batchQueue.queuedRequestsQuery (it can read any namespace's "
        "series); without it such pools read no batch queue",
    )
    group.add_argument(
        "--prometheus-deadline-s",
        type=float,
        default=DEFAULT_DEADLINE_S,
        help="bound on one pool's whole Prometheus fetch, seconds (default %(default)s)",
    )
    group.add_argument(
        "--prometheus-fetch-workers",
        type=int,
        default=DEFAULT_FETCH_WORKERS,
        help="threads running Prometheus fetches (default %(default)s)",
    )
    group.add_argument(
        "--prometheus-fetches-per-namespace",
        type=int,
        default=DEFAULT_FETCHES_PER_NAMESPACE,
        help="fetches of one namespace's pools in flight at once (default %(default)s)",
    )


def prometheus_settings(args: argparse.Namespace, token: str | None) -> PrometheusSettings:
    """What the flags (and their environment defaults) allow; ValueError on a bad value."""
    token_urls = args.prometheus_token_url or [
        check_token_url(url) for url in _env_list(TOKEN_URLS_ENV)
    ]
    cidrs = args.prometheus_allow_cidr or _env_list(ALLOW_CIDRS_ENV)
    if token and not token_urls:
        log.warning(
            "a Prometheus token is configured but no --prometheus-token-url: it is sent nowhere"
        )
    return PrometheusSettings(
        token=token,
        token_urls=tuple(token_urls),
        destinations=DestinationPolicy.build(cidrs, os.environ.get("KUBERNETES_SERVICE_HOST")),
        allow_pool_promql=args.allow_pool_promql,
        deadline_s=args.prometheus_deadline_s,
    )


def fetch_limiter(args: argparse.Namespace) -> FetchLimiter:
    """The fetch executor the flags size."""
    return FetchLimiter(args.prometheus_fetch_workers, args.prometheus_fetches_per_namespace)
