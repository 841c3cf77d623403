"""What one gateway runs with: where its pods are, its admission tunables, its share of the caps.

Two ways to know the pods: a static list of endpoints (`--endpoint ROLE=URL`, for laptops and
tests) or the Kubernetes API (the pool's pods, watched). Either way every pod is a `PodInfo`;
the dispatcher turns those into the routing core's slots.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Final

from chiron_operator.core.enums import Role
from chiron_operator.routing import DEADLINE_BUCKET_S, RoutingTuning

DEFAULT_PORT: Final = 8080
DEFAULT_MAX_RETRIES: Final = 3
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
STORE_ENV: Final = "CHIRON_GATEWAY_STORE"
"""The store URL's environment variable (the operator sets it from a Secret for PostgreSQL)."""
DEFAULT_STORE: Final = "sqlite:///chiron-batches.db"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_s(text: str) -> float:
    """Seconds in `600`, `600s`, `30m`, `2h` or `1d`; ValueError naming the text otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 600, 600s, 30m, 2h, 1d)")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} must be a positive duration")
    return seconds


@dataclass(frozen=True, slots=True)
class PodInfo:
    """One vLLM pod as the gateway knows it.

    `max_num_seqs` is the `--max-num-seqs` it runs (None: unknown, then only the role's target
    caps it); `ready` is False while it starts or terminates (it takes nothing new then).
    """

    name: str
    role: Role
    url: str
    max_num_seqs: int | None
    ready: bool = True


@dataclass(frozen=True, slots=True)
class Share:
    """This replica's place among the pool's gateway replicas: it takes `index` of `replicas`
    shares of every pod's cap (`routing.pod_cap_seqs`)."""

    replicas: int = 1
    index: int = 0


@dataclass(frozen=True, slots=True)
class BatchCapacity:
    """The most output tokens/s the pool could give batch work at its largest size (what a
    batch's completion window is checked against), and where the figure comes from."""

    max_tokens_per_s: float
    detail: str

    def describe(self) -> str:
        return self.detail


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything `chiron-gateway` runs with, validated."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    pool: str = ""
    namespace: str = ""
    endpoints: tuple[PodInfo, ...] = ()
    routing: RoutingTuning = field(default_factory=RoutingTuning)
    share: Share = field(default_factory=Share)
    default_batch_deadline_s: float = 3600.0
    max_retries: int = DEFAULT_MAX_RETRIES
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    eject_s: float = 2.0  # how long a pod that gave no answer takes nothing new
    pod_port_annotation: str = ""
    kubeconfig: str = ""
    pod_name: str = ""
    deadline_bucket_s: float = DEADLINE_BUCKET_S
    store_url: str = ""  # the Batch API's store; "" serves no Batch API (embedded uses)
    max_file_bytes: int = 200 * 1024 * 1024
    max_batch_requests: int = 100_000
    batch_max_attempts: int = 5
    batch_backoff_s: float = 1.0  # the first retry's wait; doubling up to 30 s
    min_batch_window_s: float = 10.0
    batch_poll_s: float = 1.0  # how often the dispatching replica reads the store for changes
    batch_capacity: BatchCapacity | None = None  # static mode's figure (Kubernetes: the pool's)

    @property
    def static(self) -> bool:
        """True when the pods are a fixed list (no Kubernetes API)."""
        return bool(self.endpoints)
