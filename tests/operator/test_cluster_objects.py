"""ensure_objects: create what is missing, leave what is right alone, never reset a replica count.

A recording stand-in for KubeClient: these are the decisions about which calls to make, the
integration tests run the same code against the dev cluster.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest

from chiron_operator.api import parse_spec
from chiron_operator.core.enums import Role
from chiron_operator.kube import KubeApiError, KubeClient, build_deployment, build_services
from chiron_operator.operator import objects as cluster
from chiron_operator.operator.context import PoolRef
from chiron_operator.operator.main import exact_namespaces, parse_args

REF = PoolRef("llm", "p", "uid-1")
SPEC = parse_spec(
    {
        "model": "m",
        "template": {"image": "vllm/vllm-openai:v0.11.0"},
        "prometheus": {"url": "http://prometheus:9090"},
        "roles": {"interactive": {"minReplicas": 1}, "mixed": {"minReplicas": 1}},
    }
)


class Recorder:
    """The calls ensure_objects makes; a Deployment listed in `taken` exists already."""

    def __init__(self, taken: dict[str, dict[str, Any]] | None = None) -> None:
        self.taken = taken or {}
        self.services: list[dict[str, Any]] = []
        self.calls: list[str] = []

    def create_deployment(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        self.calls.append(f"create {name}")
        if name in self.taken:
            raise KubeApiError(409, "AlreadyExists", name)
        return body

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(f"get {name}")
        return self.taken.get(name)

    def patch_deployment(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append(f"patch {name} replicas={patch['spec'].get('replicas')}")

    def list_services(self, namespace: str, pool: str) -> list[dict[str, Any]]:
        return self.services

    def apply_service(self, body: dict[str, Any]) -> None:
        self.calls.append(f"apply {body['metadata']['name']}")


def run(kube: Recorder, existing: list[dict[str, Any]]) -> list[str]:
    return cluster.ensure_objects(cast(KubeClient, kube), REF, SPEC, SPEC.to_tuning(), existing)


def test_a_new_pool_gets_its_deployments_and_services_once() -> None:
    kube = Recorder()
    touched = run(kube, [])
    assert kube.calls == [
        "create p-interactive",
        "create p-mixed",
        "create p-batch",
        "apply p-interactive",
        "apply p-batch",
    ]
    assert touched == ["p-interactive", "p-mixed", "p-batch", "p-interactive", "p-batch"]


def test_a_deployment_someone_else_created_first_keeps_its_replicas() -> None:
    scaled = build_deployment("p", "llm", "uid-1", SPEC, Role.MIXED, replicas=3, max_num_seqs=64)
    kube = Recorder({"p-mixed": scaled})
    kube.services = build_services("p", "llm", "uid-1", SPEC)
    run(kube, [])
    assert "get p-mixed" in kube.calls
    assert not any(c.startswith("patch p-mixed") for c in kube.calls)


def test_a_template_change_patches_the_template_and_never_the_replicas() -> None:
    old = build_deployment("p", "llm", "uid-1", SPEC, Role.MIXED, replicas=3, max_num_seqs=64)
    old["spec"]["template"]["spec"]["containers"][0]["image"] = "vllm/vllm-openai:v0.10.0"
    current = [copy.deepcopy(old)]
    for role in (Role.INTERACTIVE, Role.BATCH):
        current.append(
            build_deployment("p", "llm", "uid-1", SPEC, role, replicas=1, max_num_seqs=8)
        )
    kube = Recorder()
    kube.services = build_services("p", "llm", "uid-1", SPEC)
    run(kube, current)
    assert [c for c in kube.calls if c.startswith("patch")] == ["patch p-mixed replicas=None"]
    assert not any(c.startswith(("create", "apply")) for c in kube.calls)


@pytest.mark.parametrize(
    ("argv", "exact"),
    [
        (["--namespace", "llm", "--namespace", "batch"], True),
        (["--namespace", "llm-*"], False),
        (["--all-namespaces"], False),
    ],
)
def test_only_exact_namespace_lists_turn_kopfs_cluster_scans_off(
    argv: list[str], exact: bool
) -> None:
    assert exact_namespaces(parse_args(argv)) is exact


def _current(spec: Any) -> list[dict[str, Any]]:
    return [
        build_deployment("p", "llm", "uid-1", spec, role, replicas=1, max_num_seqs=64)
        for role in (Role.INTERACTIVE, Role.MIXED, Role.BATCH)
    ]


def test_server_defaults_in_the_live_template_are_not_a_change() -> None:
    current = _current(SPEC)
    for deployment in current:
        pod = deployment["spec"]["template"]["spec"]
        pod["dnsPolicy"] = "ClusterFirst"
        pod["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    kube = Recorder()
    kube.services = build_services("p", "llm", "uid-1", SPEC)
    run(kube, current)
    assert kube.calls == []


def test_any_template_field_the_spec_changes_is_rolled_out() -> None:
    tolerant = parse_spec(
        {
            **SPEC.model_dump(mode="json", by_alias=True, exclude_none=True),
            "template": {
                "image": "vllm/vllm-openai:v0.11.0",
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
        }
    )
    kube = Recorder()
    kube.services = build_services("p", "llm", "uid-1", tolerant)
    cluster.ensure_objects(
        cast(KubeClient, kube), REF, tolerant, tolerant.to_tuning(), _current(SPEC)
    )
    patched = sorted(c for c in kube.calls if c.startswith("patch"))
    assert patched == [f"patch p-{r} replicas=None" for r in ("batch", "interactive", "mixed")]
