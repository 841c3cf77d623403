"""The operator's API calls, recorded by the API server, are exactly what the chart grants.

The scenario modules of this package each check their own operator's calls against the
namespaced scope (a Role per watched namespace). Here a cluster-wide operator (the chart's
default values: every namespace, a ClusterKopfPeering) runs a pool through its life: creation
(with its gateway), a Prometheus token Secret named by the pool, a scale-up, the gateway
disabled, an HPA conflict, an invalid spec, and deletion. How requests map to RBAC attributes
is tested first, on its own.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from chiron_operator.devcluster.cluster.audit import RequestAttributes, request_attributes
from chiron_operator.devcluster.cluster.operator_process import OperatorOptions, OperatorProcess
from chiron_operator.devcluster.cluster.stack import DevStack, StackOptions
from tests.operator.harness import Pools, condition_is, fixed, pool_spec, wait_for, wait_ticks
from tests.operator.rbac_check import chart_grants, default_values, denied, used

NAMESPACE = "llm"
PEERING = "chiron-operator"
OPERATOR = "operator"
TOKEN_SECRET = "prometheus-token"


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/llm/pods", {}, ("list", "", "pods", "llm", None)),
        (
            "GET",
            "/apis/apps/v1/namespaces/llm/deployments",
            {"watch": "true"},
            ("watch", "apps", "deployments", "llm", None),
        ),
        (
            "GET",
            "/api/v1/namespaces/llm/secrets/tok",
            {},
            ("get", "", "secrets", "llm", "tok"),
        ),
        (
            "PATCH",
            "/apis/chiron.io/v1alpha1/namespaces/llm/llmservingpools/p/status",
            {},
            ("patch", "chiron.io", "llmservingpools/status", "llm", "p"),
        ),
        ("POST", "/api/v1/namespaces/llm/events", {}, ("create", "", "events", "llm", None)),
        (
            "DELETE",
            "/api/v1/namespaces/llm/pods",
            {},
            ("deletecollection", "", "pods", "llm", None),
        ),
        ("GET", "/api/v1/namespaces", {"watch": "1"}, ("watch", "", "namespaces", None, None)),
        ("GET", "/api/v1/namespaces/llm", {}, ("get", "", "namespaces", None, "llm")),
        (
            "PUT",
            "/api/v1/namespaces/llm/finalize",
            {},
            ("update", "", "namespaces/finalize", None, "llm"),
        ),
        (
            "GET",
            "/apis/chiron.io/v1alpha1/llmservingpools",
            {},
            ("list", "chiron.io", "llmservingpools", None, None),
        ),
    ],
)
def test_requests_map_to_the_attributes_the_authorizer_sees(
    method: str, path: str, query: dict[str, str], expected: tuple[object, ...]
) -> None:
    assert request_attributes(method, path, query) == RequestAttributes(*expected)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/api", "/apis", "/apis/chiron.io/v1alpha1", "/version"])
def test_discovery_is_not_a_resource_request(path: str) -> None:
    assert request_attributes("GET", path, {}) is None


@dataclass
class ClusterWide:
    stack: DevStack
    pools: Pools
    operator: OperatorProcess


@pytest.fixture(scope="module")
def cluster_wide(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterWide]:
    workdir = tmp_path_factory.mktemp("rbac")
    with DevStack(StackOptions(workdir=workdir, namespaces=(NAMESPACE,), pods=False)) as stack:
        stack.create_peering(PEERING, None)
        options = OperatorOptions(stack.kubeconfig(OPERATOR), peering=PEERING)
        with OperatorProcess(options, workdir / "operator.log") as operator:
            yield ClusterWide(stack, Pools(stack.client(), NAMESPACE), operator)


def _create_secret(pools: Pools, name: str, data: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": pools.namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    pools.kube.request(
        "POST",
        "/api/v1/namespaces/{namespace}/secrets",
        params={"namespace": pools.namespace},
        body=body,
    )


@pytest.fixture(scope="module")
def lifecycle(cluster_wide: ClusterWide) -> ClusterWide:
    """A pool through its life under the cluster-wide operator."""
    pools, audit = cluster_wide.pools, cluster_wide.stack.audit
    assert cluster_wide.stack.prometheus is not None
    _create_secret(pools, TOKEN_SECRET, {"token": "s3cret"})
    auth = {"authSecretRef": {"name": TOKEN_SECRET, "key": "token"}}
    spec = pool_spec(
        cluster_wide.stack.prometheus.url, prometheus=auth, roles={"mixed": fixed(1, 4)}
    )
    pools.create("lifecycle", spec)
    wait_for(
        lambda: condition_is(pools, "lifecycle", "MetricsAvailable", "True"),
        timeout_s=10,
        what="metrics read with the pool's token",
    )
    pools.patch_spec("lifecycle", {"roles": {"mixed": {"minReplicas": 2}}})
    wait_for(lambda: pools.replicas("lifecycle", "mixed") == 2, timeout_s=10, what="scale-up")
    wait_for(lambda: len(pools.gateway_objects("lifecycle")) == 4, timeout_s=10, what="gateway")
    pools.patch_spec("lifecycle", {"gateway": {"enabled": False}})
    wait_for(lambda: not pools.gateway_objects("lifecycle"), timeout_s=10, what="gateway removed")
    pools.create_hpa("lifecycle-hpa", "lifecycle-mixed")
    wait_for(
        lambda: condition_is(pools, "lifecycle", "Conflict", "True"), timeout_s=10, what="conflict"
    )
    pools.create(
        "broken", pool_spec(cluster_wide.stack.prometheus.url, roles={"mixed": fixed(2, 1)})
    )
    wait_for(
        lambda: condition_is(pools, "broken", "InvalidSpec", "True"), timeout_s=10, what="invalid"
    )
    wait_ticks(audit, NAMESPACE, "lifecycle", OPERATOR, 2, time.time())
    pools.delete("broken")
    pools.delete("lifecycle")
    return cluster_wide


def test_a_cluster_wide_operator_needs_nothing_the_default_values_do_not_grant(
    lifecycle: ClusterWide,
) -> None:
    calls = lifecycle.stack.audit.by(OPERATOR)
    covered = used(calls)
    for needed in (
        ("chiron.io", "llmservingpools", "watch"),
        ("chiron.io", "llmservingpools/status", "patch"),
        ("apps", "deployments", "create"),
        ("apps", "deployments", "patch"),
        ("", "services", "create"),
        ("", "events", "create"),
        ("autoscaling", "horizontalpodautoscalers", "list"),
        ("kopf.dev", "clusterkopfpeerings", "patch"),
        ("", "secrets", "get"),
        ("", "serviceaccounts", "create"),
        ("rbac.authorization.k8s.io", "rolebindings", "create"),
        ("apps", "deployments", "delete"),
        ("", "services", "delete"),
        ("", "serviceaccounts", "delete"),
        ("rbac.authorization.k8s.io", "rolebindings", "delete"),
    ):
        assert needed in covered, needed
    assert denied(calls, chart_grants(default_values([TOKEN_SECRET], [NAMESPACE]))) == []
    # Granted in another namespace only, the pool's token read is the one call denied.
    elsewhere = denied(calls, chart_grants(default_values([TOKEN_SECRET], ["team-b"])))
    assert elsewhere and all(f.startswith("get core/secrets in llm") for f in elsewhere)


def test_without_pool_secret_names_the_token_read_is_the_only_call_denied(
    lifecycle: ClusterWide,
) -> None:
    found = denied(lifecycle.stack.audit.by(OPERATOR), chart_grants(default_values()))
    assert found and all(f.startswith("get core/secrets in llm") for f in found), found


def test_an_unreadable_token_secret_is_reported_not_ignored(cluster_wide: ClusterWide) -> None:
    pools = cluster_wide.pools
    assert cluster_wide.stack.prometheus is not None
    auth = {"authSecretRef": {"name": "missing-token", "key": "token"}}
    pools.create("no-token", pool_spec(cluster_wide.stack.prometheus.url, prometheus=auth))
    try:
        found = wait_for(
            lambda: condition_is(pools, "no-token", "MetricsAvailable", "False"),
            timeout_s=10,
            what="MetricsAvailable=False",
        )
        assert "cannot read Secret llm/missing-token" in found["message"]
        assert "404" in found["message"]
        assert len(pools.events("no-token", "MetricsUnavailable")) == 1
    finally:
        pools.delete("no-token")
