"""ensure_objects: create what is missing, leave what is right alone, never reset a replica count.

A recording stand-in for KubeClient: these are the decisions about which calls to make, the
integration tests run the same code against the dev cluster.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

import pytest

from chiron_operator import __version__
from chiron_operator.api import LLMServingPoolSpec, parse_spec
from chiron_operator.core.enums import Role
from chiron_operator.kube import KubeApiError, KubeClient, build_deployment, build_services
from chiron_operator.kube.client import (
    DEPLOYMENTS,
    PERSISTENT_VOLUME_CLAIMS,
    ROLE_BINDINGS,
    SERVICE_ACCOUNTS,
    SERVICES,
)
from chiron_operator.kube.gateway import (
    build_gateway_deployment,
    build_gateway_role_binding,
    build_gateway_service,
    build_gateway_service_account,
)
from chiron_operator.kube.gateway_store import build_store_claim
from chiron_operator.operator import objects as cluster
from chiron_operator.operator import tick
from chiron_operator.operator.context import (
    DEFAULT_GATEWAY_IMAGE,
    GatewaySettings,
    OperatorContext,
    PoolRef,
)
from chiron_operator.operator.main import exact_namespaces, gateway_settings, parse_args
from chiron_operator.operator.objects import ClusterState

REF = PoolRef("llm", "p", "uid-1")
RAW: dict[str, Any] = {
    "model": "m",
    "template": {"image": "vllm/vllm-openai:v0.11.0"},
    "prometheus": {"url": "http://prometheus:9090"},
    "roles": {"interactive": {"minReplicas": 1}, "mixed": {"minReplicas": 1}},
}
SPEC = parse_spec(RAW)
SETTINGS = GatewaySettings(image="registry.example/chiron:1", cluster_role="chiron-gateway")
POSTGRESQL = {"type": "PostgreSQL", "postgresql": {"urlSecretRef": {"name": "gateway-store"}}}


class Recorder:
    """The calls ensure_objects makes; a Deployment listed in `taken` exists already, and so
    does every object in `named` (by collection path and name)."""

    def __init__(self, taken: dict[str, dict[str, Any]] | None = None) -> None:
        self.taken = taken or {}
        self.services: list[dict[str, Any]] = []
        self.named: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[str] = []
        self.patches: dict[str, dict[str, Any]] = {}

    def get_named(self, collection: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.named.get((collection, name))

    def create_in(self, collection: str, body: dict[str, Any]) -> None:
        self.calls.append(f"create {_kind(collection)} {body['metadata']['name']}")

    def patch_named(self, collection: str, namespace: str, name: str, patch: Any) -> None:
        self.calls.append(f"patch {_kind(collection)} {name}")

    def delete_named(self, collection: str, namespace: str, name: str) -> bool:
        self.calls.append(f"delete {_kind(collection)} {name}")
        return self.named.pop((collection, name), None) is not None

    def apply_deployment(self, body: dict[str, Any]) -> None:
        self.calls.append(f"apply {body['metadata']['name']}")

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
        self.patches[name] = patch

    def list_services(self, namespace: str, pool: str) -> list[dict[str, Any]]:
        return self.services

    def apply_service(self, body: dict[str, Any]) -> None:
        self.calls.append(f"apply {body['metadata']['name']}")


def _kind(collection: str) -> str:
    return collection.rsplit("/", 1)[-1]


def run(
    kube: Recorder, existing: list[dict[str, Any]], spec: LLMServingPoolSpec = SPEC
) -> list[str]:
    return cluster.ensure_objects(
        cast(KubeClient, kube), REF, spec, spec.to_tuning(), existing, gateway=SETTINGS
    )


def test_a_new_pool_gets_its_deployments_services_and_gateway_once() -> None:
    kube = Recorder()
    touched = run(kube, [])
    assert kube.calls == [
        "create p-interactive",
        "create p-mixed",
        "create p-batch",
        "apply p-interactive",
        "apply p-batch",
        "create serviceaccounts p-gateway",
        "create rolebindings p-gateway",
        "create persistentvolumeclaims p-gateway-store",
        "apply p-gateway",
        "create services p",
    ]
    assert touched == [
        *["p-interactive", "p-mixed", "p-batch", "p-interactive", "p-batch"],
        *["p-gateway", "p-gateway", "p-gateway-store", "p-gateway", "p"],
    ]


def _gateway_in_place(kube: Recorder, spec: LLMServingPoolSpec = SPEC) -> list[dict[str, Any]]:
    """The gateway's objects as the operator made them: Service and named objects in `kube`,
    the Deployment returned (with the role Deployments) for `existing`."""
    kube.services = [
        *build_services("p", "llm", "uid-1", spec),
        build_gateway_service("p", "llm", "uid-1"),
    ]
    account = build_gateway_service_account("p", "llm", "uid-1")
    binding = build_gateway_role_binding("p", "llm", "uid-1", cluster_role=SETTINGS.cluster_role)
    gateway = build_gateway_deployment("p", "llm", "uid-1", spec, image=SETTINGS.image)
    kube.named = {
        (SERVICE_ACCOUNTS, "p-gateway"): account,
        (ROLE_BINDINGS, "p-gateway"): binding,
        (DEPLOYMENTS, "p-gateway"): gateway,
        (SERVICES, "p"): kube.services[-1],
    }
    claim = build_store_claim("p", "llm", "uid-1", spec.gateway.store)
    if claim is not None:
        kube.named[(PERSISTENT_VOLUME_CLAIMS, "p-gateway-store")] = claim
    return [*_current(spec), copy.deepcopy(gateway)]


def test_a_pool_whose_gateway_is_in_place_writes_nothing() -> None:
    kube = Recorder()
    assert run(kube, _gateway_in_place(kube)) == []
    assert kube.calls == []


def test_a_gateway_spec_change_patches_the_gateway_deployment_only() -> None:
    kube = Recorder()
    existing = _gateway_in_place(kube)
    wider = parse_spec(
        {**RAW, "gateway": {"replicas": 2, "preemptBatch": False, "store": POSTGRESQL}}
    )
    assert run(kube, existing, wider) == ["p-gateway"]
    assert kube.calls == ["patch p-gateway replicas=2"]


def test_a_store_switch_patches_with_directives_deleting_the_old_stores_parts() -> None:
    """To PostgreSQL: the claim's volume and mount go (the claim itself stays); back to
    SQLite: the Secret's variable goes, and the rolling update's parameters with it."""
    kube = Recorder()
    existing = _gateway_in_place(kube)
    shared = parse_spec({**RAW, "gateway": {"store": POSTGRESQL}})
    run(kube, existing, shared)
    pod = kube.patches["p-gateway"]["spec"]["template"]["spec"]
    assert {"name": "store", "$patch": "delete"} in pod["volumes"]
    assert not any("persistentvolumeclaims" in call for call in kube.calls)
    kube = Recorder()
    run(kube, _gateway_in_place(kube, shared), SPEC)
    patch = kube.patches["p-gateway"]
    container = patch["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "CHIRON_GATEWAY_STORE", "$patch": "delete"} in container["env"]
    assert patch["spec"]["strategy"] == {"type": "Recreate", "rollingUpdate": None}
    assert "create persistentvolumeclaims p-gateway-store" in kube.calls


def test_a_claim_created_meanwhile_is_no_error() -> None:
    class Raced(Recorder):
        def create_in(self, collection: str, body: dict[str, Any]) -> None:
            super().create_in(collection, body)
            if collection == PERSISTENT_VOLUME_CLAIMS:
                raise KubeApiError(409, "AlreadyExists", body["metadata"]["name"])

    kube = Raced()
    existing = _gateway_in_place(kube)
    del kube.named[(PERSISTENT_VOLUME_CLAIMS, "p-gateway-store")]
    assert run(kube, existing) == []
    assert kube.calls == ["create persistentvolumeclaims p-gateway-store"]


def test_a_binding_to_another_cluster_role_is_recreated() -> None:
    """A roleRef is immutable: the binding is deleted and created again, never patched."""
    kube = Recorder()
    existing = _gateway_in_place(kube)
    old = build_gateway_role_binding("p", "llm", "uid-1", cluster_role="old-role")
    kube.named[(ROLE_BINDINGS, "p-gateway")] = old
    run(kube, existing)
    assert kube.calls == ["delete rolebindings p-gateway", "create rolebindings p-gateway"]


def test_disabling_the_gateway_deletes_its_objects_and_keeps_the_rest() -> None:
    kube = Recorder()
    existing = _gateway_in_place(kube)
    off = parse_spec({**RAW, "gateway": {"enabled": False}})
    assert run(kube, existing, off) == ["p-gateway", "p", "p-gateway", "p-gateway"]
    # Not the SQLite store's claim: it holds the accepted batches, and goes with the pool.
    assert kube.calls == [
        "delete deployments p-gateway",
        "delete services p",
        "delete rolebindings p-gateway",
        "delete serviceaccounts p-gateway",
    ]
    # Once gone, the two objects the listings cannot show are read by name, and nothing deleted.
    kube.calls = []
    kube.services = build_services("p", "llm", "uid-1", off)
    assert run(kube, _current(off), off) == []
    assert kube.calls == []


def test_a_service_named_like_the_pool_that_is_not_the_gateways_is_left_alone() -> None:
    kube = Recorder()
    existing = _gateway_in_place(kube)
    theirs = {"metadata": {"name": "p", "labels": {"chiron.io/pool": "p"}}, "spec": {}}
    kube.services = [*build_services("p", "llm", "uid-1", SPEC), theirs]
    off = parse_spec({**RAW, "gateway": {"enabled": False}})
    run(kube, existing, off)
    assert "delete services p" not in kube.calls


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
    current.append(_gateway_in_place(kube)[-1])
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
    kube = Recorder()
    current = _gateway_in_place(kube)
    for deployment in current:
        deployment["spec"]["progressDeadlineSeconds"] = 600
        pod = deployment["spec"]["template"]["spec"]
        pod["dnsPolicy"] = "ClusterFirst"
        pod["containers"][0]["imagePullPolicy"] = "IfNotPresent"
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


def test_gateway_settings_come_from_flags_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CHIRON_GATEWAY_IMAGE", raising=False)
    assert gateway_settings(parse_args([])) == GatewaySettings(
        image=DEFAULT_GATEWAY_IMAGE, cluster_role="chiron-gateway"
    )
    assert DEFAULT_GATEWAY_IMAGE.endswith(f":{__version__}")
    monkeypatch.setenv("CHIRON_GATEWAY_IMAGE", "registry.example/chiron:2")
    assert gateway_settings(parse_args([])).image == "registry.example/chiron:2"
    flags = ["--gateway-image", "mine:1", "--gateway-cluster-role", "llm-gateway"]
    assert gateway_settings(parse_args(flags)) == GatewaySettings("mine:1", "llm-gateway")


class Forbidden(Recorder):
    """A cluster whose role Deployments exist but whose RBAC refuses the gateway's objects."""

    def __init__(self, deployments: list[dict[str, Any]]) -> None:
        super().__init__()
        self.deployments = deployments
        self.services = build_services("p", "llm", "uid-1", SPEC)

    def list_deployments(self, namespace: str, pool: str) -> list[dict[str, Any]]:
        return self.deployments

    def list_pods(self, namespace: str, pool: str) -> list[dict[str, Any]]:
        return []

    def list_hpas(self, namespace: str) -> list[dict[str, Any]]:
        return []

    def list_scaled_objects(self, namespace: str) -> list[dict[str, Any]]:
        return []

    def get_named(self, collection: str, namespace: str, name: str) -> dict[str, Any] | None:
        raise KubeApiError(403, "Forbidden", f"cannot get {collection}")


def _read(kube: Forbidden) -> ClusterState:
    ctx = OperatorContext(kube=cast(KubeClient, kube), gateway=SETTINGS)
    return asyncio.run(tick._read_complete(ctx, REF, SPEC, SPEC.to_tuning()))


def test_a_gateway_that_cannot_be_recreated_does_not_stop_the_tick() -> None:
    state = _read(Forbidden(_current(SPEC)))
    assert len(state.deployments) == 3


def test_a_missing_role_still_fails_the_tick_when_its_objects_cannot_be_written() -> None:
    with pytest.raises(KubeApiError):
        _read(Forbidden(_current(SPEC)[:2]))
