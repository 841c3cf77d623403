"""The gateway's objects: valid Kubernetes, hardened, and what chiron-gateway itself accepts."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from chiron_operator.api import parse_spec
from chiron_operator.core.enums import Role
from chiron_operator.gateway import cli as gateway_cli
from chiron_operator.gateway.discovery import gateway_share, pod_info
from chiron_operator.kube import build_deployment, build_services
from chiron_operator.kube import labels as lb
from chiron_operator.kube.gateway import (
    build_gateway_deployment,
    build_gateway_role_binding,
    build_gateway_service,
    build_gateway_service_account,
    gateway_args,
    gateway_endpoint,
    seconds_text,
)
from chiron_operator.routing import RoutingTuning
from chiron_operator.sim.scenario import ScenarioPool
from tests.kube.support import SPEC

POOL, NS, UID, IMAGE = "llama-70b", "llm", "pool-uid", "registry.example/chiron:1.2.3"
ROLE = "chiron-operator-gateway"
KUBE_VERSIONS = ("1.30.0", "1.37.0")
TUNED = {
    "replicas": 3,
    "resources": {"limits": {"cpu": "2", "memory": "1Gi"}},
    "maxQueuedRequests": 0,
    "maxQueueWaitS": 2.5,
    "mixedReserveSlots": 4,
    "preemptBatch": False,
    "batchOnInteractive": False,
    "interactiveReserveSlots": 8,
    # Three replicas share a database: the SQLite store runs one.
    "store": {"type": "PostgreSQL", "postgresql": {"urlSecretRef": {"name": "gateway-store"}}},
}


def spec(**gateway: Any) -> Any:
    return parse_spec({**SPEC, "gateway": gateway, "slo": {"batchDeadlineS": 7200}})


def objects(**gateway: Any) -> list[dict[str, Any]]:
    return [
        build_gateway_deployment(POOL, NS, UID, spec(**gateway), image=IMAGE),
        build_gateway_service(POOL, NS, UID),
        build_gateway_service_account(POOL, NS, UID),
        build_gateway_role_binding(POOL, NS, UID, cluster_role=ROLE),
    ]


def pod_template(deployment: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = deployment["spec"]["template"]
    return found


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("gateway", [{}, TUNED], ids=["defaults", "tuned"])
def test_objects_are_valid_kubernetes(kube_version: str, gateway: dict[str, Any]) -> None:
    for obj in objects(**gateway):
        kubernetes_validate.validate(obj, kube_version, strict=True)


def test_every_object_is_the_pools_and_named_after_it() -> None:
    names = [obj["metadata"]["name"] for obj in objects()]
    assert names == [f"{POOL}-gateway", POOL, f"{POOL}-gateway", f"{POOL}-gateway"]
    for obj in objects():
        meta = obj["metadata"]
        assert meta["namespace"] == NS
        assert meta["ownerReferences"] == [lb.owner_reference(POOL, UID)]
        assert meta["labels"] == {
            "app.kubernetes.io/name": "chiron-gateway",
            "app.kubernetes.io/instance": POOL,
            "app.kubernetes.io/component": "gateway",
            "app.kubernetes.io/managed-by": "chiron-operator",
            "chiron.io/pool": POOL,
        }


def test_the_deployment_runs_chiron_gateway_for_the_pool() -> None:
    built = build_gateway_deployment(POOL, NS, UID, spec(), image=IMAGE)
    assert built["spec"]["replicas"] == 1
    assert built["spec"]["selector"]["matchLabels"] == {
        "chiron.io/pool": POOL,
        "app.kubernetes.io/component": "gateway",
    }
    assert "chiron.io/role" not in pod_template(built)["metadata"]["labels"]
    pod = pod_template(built)["spec"]
    assert pod["serviceAccountName"] == f"{POOL}-gateway"
    assert pod["automountServiceAccountToken"] is True
    (container,) = pod["containers"]
    assert (container["name"], container["image"]) == ("gateway", IMAGE)
    assert container["command"] == ["chiron-gateway"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["env"] == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }


def test_the_pod_is_hardened() -> None:
    pod = pod_template(build_gateway_deployment(POOL, NS, UID, spec(), image=IMAGE))["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert not any("hostPath" in v for v in pod["volumes"])


def test_the_spec_reaches_the_container_and_the_gateway_accepts_it() -> None:
    """The args parse with chiron-gateway's own flags into the spec's routing tuning."""
    built = build_gateway_deployment(POOL, NS, UID, spec(**TUNED), image=IMAGE)
    assert built["spec"]["replicas"] == 3
    (container,) = pod_template(built)["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    }
    config = gateway_cli.config_from(gateway_cli.parser().parse_args(container["args"]))
    assert (config.pool, config.namespace, config.port) == (POOL, NS, 8080)
    assert config.routing == RoutingTuning(
        max_queued_interactive=0,
        max_queue_wait_s=2.5,
        mixed_reserve_slots=4,
        preempt_batch=False,
        batch_on_interactive=False,
        interactive_reserve_slots=8,
    )
    assert config.default_batch_deadline_s == 7200.0
    assert not config.static


def test_default_args_leave_batch_preemption_on() -> None:
    args = gateway_args(POOL, NS, spec())
    assert "--no-preempt-batch" not in args
    config = gateway_cli.config_from(gateway_cli.parser().parse_args(args))
    assert config.routing == RoutingTuning()


def test_the_spec_image_wins_over_the_operators() -> None:
    built = build_gateway_deployment(POOL, NS, UID, spec(image="mine:1"), image=IMAGE)
    assert pod_template(built)["spec"]["containers"][0]["image"] == "mine:1"


@pytest.mark.parametrize(
    ("seconds", "text"), [(30.0, "30s"), (0.5, "0.5s"), (3600.0, "3600s"), (1e-05, "0.00001s")]
)
def test_durations_are_never_in_exponent_form(seconds: float, text: str) -> None:
    assert seconds_text(seconds) == text


def test_the_service_is_the_pools_entrypoint_and_selects_only_gateway_pods() -> None:
    service = build_gateway_service(POOL, NS, UID)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    selector = service["spec"]["selector"].items()
    gateway_pod = pod_template(build_gateway_deployment(POOL, NS, UID, spec(), image=IMAGE))
    assert selector <= gateway_pod["metadata"]["labels"].items()
    parsed = spec()
    for role in Role:
        vllm = build_deployment(POOL, NS, UID, parsed, role, replicas=1, max_num_seqs=8)
        assert not selector <= pod_template(vllm)["metadata"]["labels"].items()
    assert POOL not in {s["metadata"]["name"] for s in build_services(POOL, NS, UID, parsed)}
    assert gateway_endpoint(POOL, NS) == f"http://{POOL}.{NS}.svc:80"


def test_the_binding_grants_the_configured_cluster_role_to_the_gateway_only() -> None:
    binding = build_gateway_role_binding(POOL, NS, UID, cluster_role=ROLE)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": ROLE,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{POOL}-gateway", "namespace": NS}
    ]


def test_the_gateway_tells_its_own_pods_from_the_vllm_pods() -> None:
    """What chiron-gateway's discovery reads: a gateway pod is no vLLM pod, and counts as a
    replica sharing the caps."""
    template = pod_template(build_gateway_deployment(POOL, NS, UID, spec(), image=IMAGE))
    pods = {
        name: {"metadata": {"name": name, **template["metadata"]}, "status": _ready()}
        for name in (f"{POOL}-gateway-a", f"{POOL}-gateway-b")
    }
    assert all(pod_info(pod) is None for pod in pods.values())
    share = gateway_share(pods, f"{POOL}-gateway-b")
    assert (share.replicas, share.index) == (2, 1)


def _ready() -> dict[str, Any]:
    return {"podIP": "10.0.0.9", "conditions": [{"type": "Ready", "status": "True"}]}


def test_the_longest_pool_name_keeps_every_name_valid() -> None:
    longest = "p" * lb.MAX_POOL_NAME
    for obj in [
        build_gateway_deployment(longest, NS, UID, spec(), image=IMAGE),
        build_gateway_service(longest, NS, UID),
        build_gateway_service_account(longest, NS, UID),
        build_gateway_role_binding(longest, NS, UID, cluster_role=ROLE),
    ]:
        kubernetes_validate.validate(obj, KUBE_VERSIONS[0], strict=True)
        assert len(obj["metadata"]["name"]) <= 63
    with pytest.raises(ValueError, match="<pool>, <pool>-interactive"):
        build_gateway_service(longest + "p", NS, UID)


@pytest.mark.parametrize(
    "flag", ["--max-queued", "--mixed-reserve-slots", "--interactive-reserve-slots"]
)
def test_a_negative_count_names_its_flag(flag: str) -> None:
    args = gateway_cli.parser().parse_args(["--pool", POOL, "--namespace", NS, flag, "-1"])
    with pytest.raises(ValueError, match=flag):
        gateway_cli.config_from(args)


@pytest.mark.parametrize("gateway", [{}, TUNED], ids=["defaults", "tuned"])
def test_the_simulator_routes_with_what_the_gateway_would_run(gateway: dict[str, Any]) -> None:
    """A scenario's (or a replayed pool's) `gateway` section reaches the simulated router as the
    same routing tuning `chiron-gateway` builds from the Deployment's args."""
    pool = spec(**gateway)
    args = gateway_args(POOL, NS, pool)
    running = gateway_cli.config_from(gateway_cli.parser().parse_args(args)).routing
    assert ScenarioPool(gateway=pool.gateway).routing_tuning() == running
