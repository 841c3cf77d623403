"""What the operator's integration tests share: pool specs, server-state reads, load, waiting.

Every read goes through the API server (as the `harness` identity), so assertions are on
server state; the audit log says who made which call.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from chiron_operator.core.enums import RequestClass
from chiron_operator.devcluster.cluster.apiclient import AsyncApi
from chiron_operator.devcluster.cluster.audit import AuditLog, AuditRecord
from chiron_operator.devcluster.cluster.operator_process import OperatorOptions, OperatorProcess
from chiron_operator.devcluster.cluster.stack import DevStack
from chiron_operator.devcluster.demo.traffic import Balancer, Completion, Endpoints, HoldLoad
from chiron_operator.kube import KubeApiError, KubeClient

T = TypeVar("T")
Json = dict[str, Any]

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
POOLS = "/apis/chiron.io/v1alpha1/namespaces/{namespace}/llmservingpools"
DEPLOYMENTS = "/apis/apps/v1/namespaces/{namespace}/deployments"
SERVICES = "/api/v1/namespaces/{namespace}/services"
EVENTS = "/api/v1/namespaces/{namespace}/events"
HPAS = "/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"
SERVICE_ACCOUNTS = "/api/v1/namespaces/{namespace}/serviceaccounts"
ROLE_BINDINGS = "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
CLAIMS = "/api/v1/namespaces/{namespace}/persistentvolumeclaims"
PODS = "/api/v1/namespaces/{namespace}/pods"
MERGE = "application/merge-patch+json"
INTERVAL_S = 1.0
SCRAPE_S = 1.0
# Interactive and mixed pods run 4 sequences: a dozen long requests saturate two of them.
SEQS = 4


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> Json:
    """`base` with `override` merged in, recursively (a JSON merge patch without deletes)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def fixed(min_replicas: int, max_replicas: int, seqs: int = SEQS) -> Json:
    """Role bounds with the batch size pinned (no restarts get in the way of scaling tests)."""
    return {
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "minBatchSizeSeqs": seqs,
        "maxBatchSizeSeqs": seqs,
        "initialBatchSizeSeqs": seqs,
    }


def pool_spec(prometheus_url: str, **override: Any) -> Json:
    """A small Enforce pool ticking every second; `override` merges into it."""
    base = {
        "model": MODEL,
        "mode": "Enforce",
        "template": {"image": "vllm/vllm-openai:v0.11.0", "args": ["--max-model-len", "4096"]},
        "slo": {"interactiveTtftS": 2.0, "interactiveItlS": 0.1},
        "roles": {
            "interactive": fixed(1, 1),
            "mixed": fixed(1, 3),
            "batch": {"minReplicas": 0, "maxReplicas": 0},
        },
        "prometheus": {"url": prometheus_url, "windowS": 10, "scrapeIntervalS": SCRAPE_S},
        "control": {"intervalS": INTERVAL_S, "localIntervalS": INTERVAL_S, "historyLimit": 100},
        # Spelled out rather than defaulted: the tests' arithmetic (a dozen requests make two
        # pods busy, one each leaves them idle) must not move when a sweep retunes a default.
        "tuning": {
            "global": {"busyRunningRatio": 0.8, "ibpHighRatio": 0.8, "ibpLowRatio": 0.5},
            "guards": {
                "metricsStalenessS": 10,
                "scaleDownStabilizationS": 5,
                "scaleUpCooldownS": 30,
                "maxScaleUpStepReplicas": 4,
                "maxScaleDownStepReplicas": 1,
            },
        },
    }
    return merged(base, override)


def wait_for(
    probe: Callable[[], T | None], *, timeout_s: float, what: str, interval_s: float = 0.1
) -> T:
    """Poll `probe` until it returns something truthy; fail saying `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"not within {timeout_s} s: {what} (last: {last!r})")


class Pools:
    """One namespace's pools and the objects they own, read and written through the API."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def _params(self, **more: str) -> dict[str, str]:
        return {"namespace": self.namespace, **more}

    def create(self, name: str, spec: Mapping[str, Any]) -> Json:
        body = {
            "apiVersion": "chiron.io/v1alpha1",
            "kind": "LLMServingPool",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": dict(spec),
        }
        return self.kube.request("POST", POOLS, params=self._params(), body=body)

    def get(self, name: str) -> Json | None:
        try:
            return self.kube.request("GET", POOLS + "/{name}", params=self._params(name=name))
        except KubeApiError as exc:
            if exc.not_found:
                return None
            raise

    def status(self, name: str) -> Json:
        return (self.get(name) or {}).get("status") or {}

    def patch_spec(self, name: str, patch: Mapping[str, Any]) -> Json:
        return self.kube.request(
            "PATCH",
            POOLS + "/{name}",
            params=self._params(name=name),
            body={"spec": dict(patch)},
            content_type=MERGE,
        )

    def delete(self, name: str, *, timeout_s: float = 20.0) -> None:
        """Delete the pool and wait until it, its Deployments and its pods are gone."""
        try:
            self.kube.request("DELETE", POOLS + "/{name}", params=self._params(name=name))
        except KubeApiError as exc:
            if not exc.not_found:
                raise
        wait_for(
            lambda: self.get(name) is None and not self.pods(name) and not self.deployments(name),
            timeout_s=timeout_s,
            what=f"pool {name} and its pods deleted",
        )

    def deployments(self, pool: str) -> dict[str, Json]:
        """The pool's role Deployments by role (the gateway's is in `gateway_objects`)."""
        found = self.kube.list_deployments(self.namespace, pool)
        return {
            d["metadata"]["labels"]["chiron.io/role"]: d
            for d in found
            if "chiron.io/role" in d["metadata"]["labels"]
        }

    def gateway_objects(self, pool: str) -> dict[str, Json]:
        """The pool's gateway objects that exist, by kind (Deployment, Service,
        ServiceAccount, RoleBinding)."""
        paths = {
            "Deployment": (DEPLOYMENTS, f"{pool}-gateway"),
            "Service": (SERVICES, pool),
            "ServiceAccount": (SERVICE_ACCOUNTS, f"{pool}-gateway"),
            "RoleBinding": (ROLE_BINDINGS, f"{pool}-gateway"),
        }
        found = {
            kind: self.kube.get_named(collection, self.namespace, name)
            for kind, (collection, name) in paths.items()
        }
        return {kind: obj for kind, obj in found.items() if obj is not None}

    def store_claim(self, pool: str) -> Json | None:
        """The SQLite store's claim, `<pool>-gateway-store` (not a gateway object: it stays
        when the gateway goes), or None."""
        return self.kube.get_named(CLAIMS, self.namespace, f"{pool}-gateway-store")

    def deployment(self, pool: str, role: str) -> Json | None:
        return self.kube.get_deployment(self.namespace, f"{pool}-{role}")

    def replicas(self, pool: str, role: str) -> int | None:
        found = self.deployment(pool, role)
        return None if found is None else int(found["spec"]["replicas"])

    def services(self, pool: str) -> dict[str, Json]:
        found = self.kube.request("GET", SERVICES, params=self._params())["items"]
        return {
            s["metadata"]["name"]: s
            for s in found
            if s["metadata"].get("labels", {}).get("chiron.io/pool") == pool
        }

    def pods(self, pool: str) -> list[Json]:
        return self.kube.list_pods(self.namespace, pool)

    def ready_pods(self, pool: str, role: str) -> list[Json]:
        return [
            p
            for p in self.pods(pool)
            if p["metadata"]["labels"].get("chiron.io/role") == role
            and not p["metadata"].get("deletionTimestamp")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
        ]

    def events(self, pool: str, reason: str | None = None) -> list[Json]:
        found = self.kube.request("GET", EVENTS, params=self._params())["items"]
        return [
            e
            for e in found
            if e["involvedObject"]["name"] == pool and reason in (None, e.get("reason"))
        ]

    def condition(self, pool: str, kind: str) -> Json | None:
        conditions = self.status(pool).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind), None)

    def decisions(self, pool: str, role: str | None = None, field: str | None = None) -> list[Json]:
        return [
            d
            for d in self.status(pool).get("decisions") or []
            if role in (None, d["role"]) and field in (None, d["field"])
        ]

    def create_hpa(self, name: str, deployment: str) -> Json:
        body = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": deployment,
                },
                "minReplicas": 1,
                "maxReplicas": 4,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80},
                        },
                    }
                ],
            },
        }
        return self.kube.request("POST", HPAS, params=self._params(), body=body)

    def delete_hpa(self, name: str) -> None:
        self.kube.request("DELETE", HPAS + "/{name}", params=self._params(name=name))


def record_time(record: Mapping[str, Any]) -> float:
    """A status decision record's time, as unix seconds."""
    return datetime.fromisoformat(str(record["time"])).timestamp()


def condition_is(pools: Pools, pool: str, kind: str, status: str) -> Json | None:
    """The condition when it has `status` (for wait_for)."""
    found = pools.condition(pool, kind)
    return found if found is not None and found["status"] == status else None


def status_writes(
    audit: AuditLog, namespace: str, pool: str, identity: str, since_s: float = 0.0
) -> list[AuditRecord]:
    """The status patches `identity` made to a pool since `since_s`: one per tick."""
    path = POOLS.format(namespace=namespace) + f"/{pool}/status"
    return [r for r in audit.by(identity, since_s) if r.method == "PATCH" and r.path == path]


def wait_ticks(
    audit: AuditLog, namespace: str, pool: str, identity: str, count: int, since_s: float
) -> list[AuditRecord]:
    """Wait for `count` ticks of the pool (status writes) after `since_s`; returns them."""

    def probe() -> list[AuditRecord] | None:
        found = status_writes(audit, namespace, pool, identity, since_s)
        return found if len(found) >= count else None

    return wait_for(probe, timeout_s=count * INTERVAL_S * 4 + 10, what=f"{count} ticks of {pool}")


class Load:
    """A saturating client of a pool's interactive Service, run on the stack's event loop."""

    def __init__(self, stack: DevStack, namespace: str, pool: str, *, concurrency: int) -> None:
        self._stack = stack
        self._namespace = namespace
        self._pool = pool
        self._concurrency = concurrency
        self._load: HoldLoad | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> Load:
        self._stack.loop.run(self._start())
        return self

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession()
        api = AsyncApi(self._stack.url, self._session, "loadgen")
        endpoints = Endpoints(api, self._namespace, self._pool, RequestClass.INTERACTIVE)
        self._load = HoldLoad(
            Balancer(endpoints), self._session, MODEL, concurrency=self._concurrency
        )
        self._load.start()

    def stop(self) -> list[Completion]:
        return self._stack.loop.run(self._stop())

    async def _stop(self) -> list[Completion]:
        done: list[Completion] = []
        if self._load is not None:
            await self._load.stop()
            done = self._load.completions
        if self._session is not None:
            await self._session.close()
        self._load = self._session = None
        return done


class OperatorSlot:
    """The operator a group of tests shares; a test may restart it (a new process)."""

    def __init__(self, options: OperatorOptions, log_dir: Path) -> None:
        self.options = options
        self._log_dir = log_dir
        self._count = 0
        self.process = self._spawn()

    def _spawn(self) -> OperatorProcess:
        self._count += 1
        log = self._log_dir / f"operator-{self._count}.log"
        return OperatorProcess(self.options, log).start()

    def restart(self) -> OperatorProcess:
        self.process.stop()
        self.process = self._spawn()
        return self.process

    def stop(self) -> None:
        self.process.stop()
