"""The pods the operator creates meet Kubernetes' Pod Security Standards.

vLLM pods: `restricted` but for running as non-root by default (the official image runs as
root), `restricted` in full once the operator requires a non-root user. Gateway pods:
`restricted` in full, always.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from chiron_operator.api import parse_spec
from chiron_operator.core.enums import Role
from chiron_operator.kube import build_deployment
from chiron_operator.kube.gateway import build_gateway_deployment
from chiron_operator.kube.pod_security import VllmSecurity
from tests.chart.pss import restricted_violations
from tests.kube.support import K8S, SPEC


def vllm_pod(security: VllmSecurity | None = None, **template: Any) -> dict[str, Any]:
    raw = {**SPEC, "template": {**SPEC["template"], **template}}
    extra = {} if security is None else {"security": security}
    built = build_deployment(
        "llama-70b", "llm", "uid", parse_spec(raw), Role.MIXED, replicas=1, max_num_seqs=8, **extra
    )
    kubernetes_validate.validate(built, K8S, strict=True)
    pod: dict[str, Any] = built["spec"]["template"]["spec"]
    return pod


def test_vllm_pods_are_restricted_but_may_run_as_the_images_root_user_by_default() -> None:
    pod = vllm_pod()
    assert restricted_violations(pod, allow_root=True) == []
    # What the vllm/vllm-openai image needs: no runAsNonRoot, no fixed user, a writable root.
    (container,) = pod["containers"]
    assert restricted_violations(pod) == ["vllm: runAsNonRoot is not true"]
    for context in (pod["securityContext"], container["securityContext"]):
        assert not {"runAsNonRoot", "runAsUser", "readOnlyRootFilesystem"} & set(context)
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_vllm_pods_meet_restricted_when_the_operator_requires_a_non_root_user() -> None:
    pod = vllm_pod(VllmSecurity(run_as_non_root=True))
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "runAsUser" not in pod["securityContext"]


def test_a_fixed_user_runs_every_vllm_container_and_owns_the_volumes() -> None:
    pod = vllm_pod(VllmSecurity(run_as_user=1000))
    assert restricted_violations(pod) == []
    context = pod["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (1000, 1000, 1000)
    assert pod["containers"][0]["securityContext"]["runAsUser"] == 1000


@pytest.mark.parametrize(("port", "added"), [(80, ["NET_BIND_SERVICE"]), (1024, None)])
def test_only_a_privileged_port_adds_the_one_capability_restricted_allows(
    port: int, added: list[str] | None
) -> None:
    pod = vllm_pod(port=port)
    capabilities = pod["containers"][0]["securityContext"]["capabilities"]
    assert capabilities.get("add") == added
    assert capabilities["drop"] == ["ALL"]
    assert restricted_violations(pod, allow_root=True) == []


def test_root_is_no_fixed_user() -> None:
    with pytest.raises(ValueError, match="non-root uid"):
        VllmSecurity(run_as_user=0)


@pytest.mark.parametrize("store", ["SQLite", "PostgreSQL"])
def test_gateway_pods_meet_restricted(store: str) -> None:
    gateway: dict[str, Any] = {"store": {"type": store}}
    if store == "PostgreSQL":
        gateway["store"]["postgresql"] = {"urlSecretRef": {"name": "db"}}
    spec = parse_spec({**SPEC, "gateway": gateway})
    built = build_gateway_deployment("llama-70b", "llm", "uid", spec, image="example/chiron:1")
    pod = built["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_checker_catches_what_restricted_forbids() -> None:
    """The checker itself: a pod breaking each control is reported for each."""
    pod = {
        "hostNetwork": True,
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [
            {
                "name": "c",
                "ports": [{"containerPort": 80, "hostPort": 80}],
                "securityContext": {
                    "privileged": True,
                    "capabilities": {"add": ["SYS_ADMIN"]},
                    "runAsUser": 0,
                },
            }
        ],
    }
    found = restricted_violations(pod)
    for expected in (
        "hostNetwork: true",
        "volume host: hostPath",
        "c: privileged",
        "c: hostPort 80",
        "c: adds capabilities ['SYS_ADMIN']",
        "volume host: type not allowed",
        "c: allowPrivilegeEscalation is not false",
        "c: does not drop ALL capabilities",
        "c: no RuntimeDefault or Localhost seccomp profile",
        "c: runAsNonRoot is not true",
        "c: runAsUser is 0",
    ):
        assert expected in found
