"""The real operator under a pod policy (allowlisted images and ServiceAccounts, vLLM pods as
non-root), on the dev cluster: a pool outside the policy is told which field, and nothing of it
is created or changed; a pool inside it gets pods with the policy's security context."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from chiron_operator.devcluster.cluster.operator_process import OperatorOptions
from chiron_operator.devcluster.cluster.stack import DevStack, StackOptions
from tests.chart.pss import restricted_violations
from tests.operator.conftest import OPERATOR, Env
from tests.operator.harness import OperatorSlot, Pools, condition_is, pool_spec, wait_for
from tests.operator.rbac_check import chart_grants, denied, namespaced_values

NAMESPACE = "tenant-a"
ALLOWED_IMAGE = "vllm/vllm-openai:v0.11.0"
POLICY_ARGS = (
    "--allowed-image-prefix",
    "vllm/vllm-openai",
    "--allowed-service-account",
    "weights-reader",
    "--vllm-run-as-non-root",
)
REFUSED, ALLOWED = "refused", "allowed"


@pytest.fixture(scope="module")
def policed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("policed")
    options = StackOptions(
        workdir=workdir, namespaces=(NAMESPACE,), pods=False, pods_namespace=NAMESPACE
    )
    with DevStack(options) as stack:
        operator = OperatorSlot(
            OperatorOptions(
                stack.kubeconfig(OPERATOR), namespaces=(NAMESPACE,), extra_args=POLICY_ARGS
            ),
            workdir,
        )
        try:
            yield Env(stack, operator, Pools(stack.client(), NAMESPACE), workdir, time.time())
        finally:
            operator.stop()


def invalid_message(pools: Pools, pool: str) -> str:
    found = wait_for(
        lambda: condition_is(pools, pool, "InvalidSpec", "True"),
        timeout_s=15,
        what=f"InvalidSpec=True on {pool}",
    )
    return str(found["message"])


def test_a_pool_outside_the_policy_is_held_and_told_which_fields(policed: Env) -> None:
    pools = policed.pools
    url = policed.prometheus.url
    template = {"image": "evil.example/miner:1", "serviceAccountName": "cluster-reader"}
    pools.create(REFUSED, pool_spec(url, template=template))
    pools.create(ALLOWED, pool_spec(url, template={"serviceAccountName": "weights-reader"}))
    try:
        message = invalid_message(pools, REFUSED)
        assert "spec.template.image: image 'evil.example/miner:1' is not allowed" in message
        assert "spec.template.serviceAccountName: ServiceAccount 'cluster-reader'" in message
        ready = pools.condition(REFUSED, "Ready")
        assert ready is not None and ready["status"] == "False"

        # The allowed neighbour is built, its pods under the policy's security context.
        wait_for(
            lambda: set(pools.deployments(ALLOWED)) == {"interactive", "mixed"},
            timeout_s=15,
            what="the allowed pool's Deployments",
        )
        for deployment in pools.deployments(ALLOWED).values():
            pod = deployment["spec"]["template"]["spec"]
            assert restricted_violations(pod) == []
            assert pod["serviceAccountName"] == "weights-reader"
        # Nothing of the refused pool exists: no role Deployment, no gateway object.
        assert pools.deployments(REFUSED) == {}
        assert pools.gateway_objects(REFUSED) == {}
        events = pools.events(REFUSED, "InvalidSpec")
        assert [e["type"] for e in events] == ["Warning"]
        assert "spec.template.image" in events[0]["message"]

        # Inside the policy, it is built.
        pools.patch_spec(
            REFUSED, {"template": {"image": ALLOWED_IMAGE, "serviceAccountName": None}}
        )
        wait_for(
            lambda: condition_is(pools, REFUSED, "InvalidSpec", "False"),
            timeout_s=15,
            what="InvalidSpec=False once inside the policy",
        )
        wait_for(
            lambda: set(pools.deployments(REFUSED)) == {"interactive", "mixed"},
            timeout_s=15,
            what="the admitted pool's Deployments",
        )
    finally:
        pools.delete(REFUSED)
        pools.delete(ALLOWED)


def test_a_running_pool_moved_outside_the_policy_keeps_its_deployments_unchanged(
    policed: Env,
) -> None:
    pools = policed.pools
    name = "moved"
    pools.create(name, pool_spec(policed.prometheus.url))
    try:
        wait_for(
            lambda: set(pools.deployments(name)) == {"interactive", "mixed"},
            timeout_s=15,
            what="the pool's Deployments",
        )
        before = {
            role: d["metadata"]["resourceVersion"] for role, d in pools.deployments(name).items()
        }
        pools.patch_spec(name, {"template": {"image": "evil.example/miner:2"}})
        assert "spec.template.image" in invalid_message(pools, name)
        # A few ticks later (one a second), the Deployments are as they were.
        time.sleep(3)
        after = pools.deployments(name)
        assert {role: d["metadata"]["resourceVersion"] for role, d in after.items()} == before
        for deployment in after.values():
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            assert container["image"] == ALLOWED_IMAGE
    finally:
        pools.delete(name)


def test_api_calls_are_allowed_by_the_chart(policed: Env) -> None:
    grants = chart_grants(namespaced_values([NAMESPACE]))
    assert denied(policed.stack.audit.by(OPERATOR), grants) == []
