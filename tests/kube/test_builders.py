"""The pure builders: role Deployments and traffic-class Services, validated against the
Kubernetes schema, with the labels, flags and owner references the operator relies on."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from chiron_operator.api import parse_spec
from chiron_operator.core.enums import Role
from chiron_operator.devcluster.cluster.selectors import matches_selector_object
from chiron_operator.kube import (
    DrainTiming,
    applied_max_num_seqs,
    applied_replicas,
    build_deployment,
    build_services,
    drain_timing,
    max_num_seqs_of,
    vllm_args,
    with_max_num_seqs,
)
from tests.kube.support import K8S, SPEC, container, deployment


@pytest.mark.parametrize("role", list(Role))
def test_deployments_are_valid_kubernetes(role: Role) -> None:
    kubernetes_validate.validate(deployment(role), K8S, strict=True)


def test_services_are_valid_kubernetes() -> None:
    for service in build_services("llama-70b", "llm", "pool-uid", parse_spec(SPEC)):
        kubernetes_validate.validate(service, K8S, strict=True)


def test_deployment_identity_and_ownership() -> None:
    built = deployment(Role.BATCH, replicas=3)
    meta = built["metadata"]
    assert (meta["name"], meta["namespace"]) == ("llama-70b-batch", "llm")
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "chiron.io/v1alpha1",
            "kind": "LLMServingPool",
            "name": "llama-70b",
            "uid": "pool-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert built["spec"]["replicas"] == 3
    assert applied_replicas(built) == 3
    assert built["spec"]["selector"] == {
        "matchLabels": {"chiron.io/pool": "llama-70b", "chiron.io/role": "batch"}
    }
    assert built["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_labels_and_annotations() -> None:
    built = deployment(Role.INTERACTIVE, seqs=16)
    template_meta = built["spec"]["template"]["metadata"]
    labels = template_meta["labels"]
    assert labels["app.kubernetes.io/name"] == "vllm"
    assert labels["app.kubernetes.io/managed-by"] == "chiron-operator"
    assert labels["chiron.io/pool"] == "llama-70b"
    assert labels["chiron.io/role"] == "interactive"  # the user's label cannot override it
    assert labels["team"] == "llm"
    assert labels["chiron.io/serves-interactive"] == "true"
    assert "chiron.io/serves-batch" not in labels
    assert template_meta["annotations"]["sidecar.istio.io/inject"] == "false"
    assert template_meta["annotations"]["chiron.io/max-num-seqs"] == "16"
    assert applied_max_num_seqs(built) == 16
    assert matches_selector_object(built["spec"]["selector"], labels)
    for key in ("chiron.io/pool", "chiron.io/role", "app.kubernetes.io/managed-by"):
        assert built["metadata"]["labels"][key] == labels[key]


def test_container_runs_vllm_serve_with_the_operator_flags_last() -> None:
    mixed = container(deployment(Role.MIXED, seqs=48))
    assert mixed["command"] == ["vllm", "serve"]
    assert mixed["args"] == [
        "meta-llama/Llama-3.1-70B-Instruct",
        "--max-model-len",
        "8192",
        "--enable-prefix-caching",
        "--port",
        "8080",
        "--tensor-parallel-size",
        "4",
        "--max-num-seqs",
        "48",
        "--scheduling-policy",
        "priority",
    ]
    assert "--scheduling-policy" not in container(deployment(Role.INTERACTIVE))["args"]
    assert "--scheduling-policy" not in container(deployment(Role.BATCH))["args"]
    assert mixed["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert mixed["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert mixed["env"] == [{"name": "HF_HUB_OFFLINE", "value": "1"}]


def test_pod_placement_and_resources() -> None:
    built = deployment()
    pod = built["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["serviceAccountName"] == "weights-reader"
    assert container(built)["resources"] == {
        "requests": {"cpu": "16", "memory": "200Gi", "nvidia.com/gpu": "4"},
        # Extended resources must be limits too: the GPU request is copied there.
        "limits": {"memory": "240Gi", "nvidia.com/gpu": "4"},
    }


def test_minimal_template_has_no_empty_fields() -> None:
    minimal = {"model": "m", "template": {"image": "i"}, "prometheus": {"url": "http://p"}}
    built = build_deployment(
        "p", "ns", "u", parse_spec(minimal), Role.BATCH, replicas=0, max_num_seqs=1
    )
    pod = built["spec"]["template"]["spec"]
    assert set(pod) == {
        "containers",
        "volumes",
        "terminationGracePeriodSeconds",
        "securityContext",
    }
    assert "resources" not in pod["containers"][0]
    assert "env" not in pod["containers"][0]
    kubernetes_validate.validate(built, K8S, strict=True)


@pytest.mark.parametrize("name", ["a" * 52, "Upper", "9lives", "bad_name"])
def test_pool_names_that_cannot_name_their_services_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="DNS-1035"):
        build_deployment(name, "ns", "u", parse_spec(SPEC), Role.MIXED, replicas=1, max_num_seqs=1)


def test_invalid_counts_are_rejected() -> None:
    with pytest.raises(ValueError):
        deployment(replicas=-1)
    with pytest.raises(ValueError):
        vllm_args(parse_spec(SPEC), Role.MIXED, 0)


def test_services_select_by_traffic_class() -> None:
    interactive, batch = build_services("llama-70b", "llm", "pool-uid", parse_spec(SPEC))
    assert interactive["metadata"]["name"] == "llama-70b-interactive"
    assert batch["metadata"]["name"] == "llama-70b-batch"
    assert interactive["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    assert interactive["metadata"]["ownerReferences"][0]["uid"] == "pool-uid"

    def selected(service: dict[str, Any]) -> set[Role]:
        selector = {"matchLabels": service["spec"]["selector"]}
        return {
            role
            for role in Role
            if matches_selector_object(
                selector, deployment(role)["spec"]["template"]["metadata"]["labels"]
            )
        }

    assert selected(interactive) == {Role.INTERACTIVE, Role.MIXED}
    assert selected(batch) == {Role.BATCH, Role.MIXED}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["m", "--max-num-seqs", "8", "--x"], ["m", "--max-num-seqs", "32", "--x"]),
        (["m", "--max-num-seqs=8"], ["m", "--max-num-seqs", "32"]),
        (["m", "--max_num_seqs", "8", "--max-num-seqs", "9"], ["m", "--max-num-seqs", "32"]),
        (["m"], ["m", "--max-num-seqs", "32"]),
    ],
)
def test_with_max_num_seqs(args: list[str], expected: list[str]) -> None:
    assert with_max_num_seqs(args, 32) == expected
    assert max_num_seqs_of(expected) == 32


def test_max_num_seqs_of_reads_the_last_setting() -> None:
    assert max_num_seqs_of(["--max-num-seqs", "4", "--max_num_seqs=6"]) == 6
    assert max_num_seqs_of(["--max-num-seqs"]) is None


def _drained(drain: dict[str, Any], slo: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = parse_spec({**SPEC, "drain": drain, **({"slo": slo} if slo else {})})
    return build_deployment("llama-70b", "llm", "u", spec, Role.MIXED, replicas=1, max_num_seqs=8)


def test_pods_drain_by_default_within_their_grace_period() -> None:
    built = deployment(Role.INTERACTIVE)
    pod = built["spec"]["template"]["spec"]
    # Routing stops during a 15 s preStop sleep; then a 1024-token answer at the default SLOs
    # (2 s + 1023 x 0.1 s, rounded up) may finish; then vLLM's own 5 s shutdown.
    assert container(built)["lifecycle"] == {"preStop": {"exec": {"command": ["/bin/sleep", "15"]}}}
    assert drain_timing(parse_spec(SPEC)) == DrainTiming(endpoint_delay_s=15, request_timeout_s=105)
    assert pod["terminationGracePeriodSeconds"] == 15 + 105 + 5
    # Older vLLM images reject --shutdown-timeout: it is opt-in.
    assert "--shutdown-timeout" not in container(built)["args"]
    assert container(built)["readinessProbe"]["httpGet"]["path"] == "/health"


@pytest.mark.parametrize("kube_version", ["1.30.0", "1.37.0"])
def test_drain_settings_reach_the_pod_consistently(kube_version: str) -> None:
    built = _drained({"endpointDelayS": 5, "requestTimeoutS": 30, "shutdownTimeoutFlag": True})
    kubernetes_validate.validate(built, kube_version, strict=True)
    args = container(built)["args"]
    assert args[-2:] == ["--shutdown-timeout", "30"]  # the operator's flags come last
    hook = container(built)["lifecycle"]["preStop"]["exec"]["command"]
    # SIGKILL only after the preStop sleep, the whole request timeout and vLLM's shutdown.
    grace = built["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == int(hook[1]) + int(args[-1]) + 5 == 40
    assert max_num_seqs_of(args) == 8
    assert with_max_num_seqs(args, 16)[-2:] == ["--shutdown-timeout", "30"]


def test_the_request_timeout_follows_the_slos_and_no_delay_means_no_hook() -> None:
    built = _drained({"endpointDelayS": 0}, slo={"interactiveTtftS": 1.0, "interactiveItlS": 0.02})
    assert "lifecycle" not in container(built)
    # ceil(1 + 1023 x 0.02) = ceil(21.46) = 22 s for the requests, 5 s for vLLM's shutdown.
    assert built["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 27
    kubernetes_validate.validate(built, K8S, strict=True)
