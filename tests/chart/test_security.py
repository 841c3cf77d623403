"""The chart's multi-tenant safety: the operator's NetworkPolicy, the pod policy it passes to the
operator, and the operator's own pod under the `restricted` Pod Security Standard."""

from __future__ import annotations

from typing import Any

import pytest

from chiron_operator.kube.pod_security import VllmSecurity
from chiron_operator.operator.main import parse_args
from chiron_operator.operator.pod_policy import PodPolicy, pod_policy
from tests.chart.pss import restricted_violations
from tests.chart.support import (
    CASES,
    DEFAULT,
    merged_values,
    objects,
    of_kind,
    one,
    operator_container,
    operator_deployment,
    parse,
    render,
)

MULTI_TENANT = "multi-tenant-values"
MONITORING = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}


def network_policy(case: str) -> dict[str, Any]:
    found: dict[str, Any] = one(objects(case), "NetworkPolicy")
    return found


@pytest.mark.parametrize("case", CASES)
def test_the_operator_pod_meets_restricted(case: str) -> None:
    pod = operator_deployment(case)["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert operator_container(case)["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("case", CASES)
def test_the_network_policy_selects_the_operator_and_opens_only_its_port(case: str) -> None:
    values = merged_values(case)
    policy = network_policy(case)["spec"]
    labels = operator_deployment(case)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": values["operator"]["metricsPort"], "protocol": "TCP"}]
    (port,) = operator_container(case)["ports"]
    assert port["containerPort"] == values["operator"]["metricsPort"]
    for peer in rule["from"]:
        # Never every namespace: an empty namespaceSelector would admit the whole cluster.
        assert peer.get("namespaceSelector") != {}


def test_by_default_only_the_monitoring_namespace_may_scrape_and_egress_is_open() -> None:
    policy = network_policy(DEFAULT)["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"][0]["from"] == [{"namespaceSelector": MONITORING}]
    assert "egress" not in policy


def test_a_multi_tenant_install_fences_egress_to_dns_the_api_server_and_prometheus() -> None:
    policy = network_policy(MULTI_TENANT)["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    prometheus_pods = {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    # Both selectors in one peer: Prometheus's pods, in the monitoring namespace only.
    assert policy["ingress"][0]["from"] == [
        {"namespaceSelector": MONITORING, "podSelector": prometheus_pods}
    ]
    dns, api, prometheus = policy["egress"]
    assert dns == {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    assert api["ports"] == [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]
    assert api["to"] == [
        {"ipBlock": {"cidr": "10.96.0.1/32"}},
        {"ipBlock": {"cidr": "172.18.0.2/32"}},
    ]
    assert prometheus == merged_values(MULTI_TENANT)["networkPolicy"]["egress"]["extra"][0]


def test_nothing_selected_means_nobody_may_reach_the_port() -> None:
    values = {"networkPolicy": {"metrics": {"namespaceSelector": None}}}
    policy = one(parse(render(values)), "NetworkPolicy")["spec"]
    assert policy["ingress"] == []


def test_extra_peers_alone_are_the_only_ones_allowed() -> None:
    peer = {"ipBlock": {"cidr": "10.1.0.0/16"}}
    values = {"networkPolicy": {"metrics": {"namespaceSelector": None, "extraFrom": [peer]}}}
    policy = one(parse(render(values)), "NetworkPolicy")["spec"]
    assert policy["ingress"][0]["from"] == [peer]


def test_the_network_policy_can_be_turned_off() -> None:
    assert of_kind(parse(render({"networkPolicy": {"enabled": False}})), "NetworkPolicy") == []


@pytest.mark.parametrize("case", CASES)
def test_the_operator_gets_the_pod_policy_the_values_give(case: str) -> None:
    """The rendered arguments, parsed by the operator itself, are the values' policy."""
    values = merged_values(case)["pools"]
    args = parse_args(operator_container(case)["args"])
    security = values["vllmSecurity"]
    assert pod_policy(args) == PodPolicy(
        image_prefixes=tuple(values["allowedImagePrefixes"]),
        service_accounts=tuple(values["allowedServiceAccounts"]),
        vllm=VllmSecurity(
            run_as_non_root=security["runAsNonRoot"], run_as_user=security["runAsUser"] or None
        ),
    )


def test_a_multi_tenant_install_passes_every_pool_flag() -> None:
    policy = pod_policy(parse_args(operator_container(MULTI_TENANT)["args"]))
    assert policy.image_prefixes == ("registry.example.com/inference/", "vllm/vllm-openai")
    assert policy.service_accounts == ("vllm-model-reader",)
    assert policy.vllm == VllmSecurity(run_as_non_root=True, run_as_user=1000)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"pools": {"vllmSecurity": {"runAsUser": -1}}}, "runAsUser"),
        ({"pools": {"allowedImagePrefixes": ["not an image"]}}, "allowedImagePrefixes"),
        ({"pools": {"allowedServiceAccounts": ["Not_A_Name"]}}, "allowedServiceAccounts"),
        ({"networkPolicy": {"egress": {"apiServerCIDRs": ["10.0.0.1"]}}}, "apiServerCIDRs"),
        ({"networkPolicy": {"metrics": {"extraFrom": [{"bogus": {}}]}}}, "bogus"),
    ],
)
def test_schema_rejects_bad_security_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message):
        render(values)
