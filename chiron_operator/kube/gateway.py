"""The pool's gateway objects (`spec.gateway`), built from the spec. Pure: no I/O.

- `<pool>-gateway`, a Deployment of `chiron-gateway --pool <pool> --namespace <ns>`, its flags
  from `spec.gateway` and the default batch deadline from `spec.slo.batchDeadlineS`;
- `<pool>`, the ClusterIP Service in front of it: the pool's one entrypoint, port 80;
- `<pool>-gateway`, the ServiceAccount the gateway reads the API with, and a RoleBinding in the
  pool's namespace binding it to the ClusterRole the operator is configured with (the chart
  creates it: get, list and watch on pods, get, list and watch on the pools);
- with the SQLite store, `<pool>-gateway-store`, the claim holding its batches; the store's
  parts of the pod (volume, `--store`, or the URL from a Secret) and its rollout strategy come
  from `gateway_store.py`.

The gateway's pods carry the pool's label and component `gateway` but no role label: the
gateway itself tells its replicas from the vLLM pods that way, and the operator's pod facts skip
pods without a role. Each replica finds its share of the caps from its own name (`$POD_NAME`).

Its pods leave like the vLLM pods do (`spec.drain`): a preStop sleep while routing learns of
the deletion, then SIGTERM, with a grace period long enough for the answers it relays.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

from chiron_operator.api.spec import LLMServingPoolSpec
from chiron_operator.kube import drain
from chiron_operator.kube import labels as lb
from chiron_operator.kube.gateway_store import (
    rollout_strategy,
    store_args,
    store_env,
    store_mounts,
    store_volumes,
)

GATEWAY_COMMAND: Final = ("chiron-gateway",)
CONTAINER_PORT: Final = 8080
SERVICE_PORT: Final = 80
HEALTH_PATH: Final = "/health"
RBAC_GROUP: Final = "rbac.authorization.k8s.io"
# The image's user (Dockerfile); set explicitly so that runAsNonRoot also holds for an image
# whose USER is a name the kubelet cannot check.
RUN_AS: Final = 65532
TMP_VOLUME: Final = "tmp"


def seconds_text(value: float) -> str:
    """Seconds as `chiron-gateway`'s duration flags take them: `30s`, `0.5s`, never `1e-05s`."""
    return f"{format(Decimal(repr(float(value))).normalize(), 'f')}s"


def gateway_args(pool_name: str, namespace: str, spec: LLMServingPoolSpec) -> list[str]:
    """The `chiron-gateway` arguments for a pool (Kubernetes mode)."""
    gateway = spec.gateway
    args = ["--pool", pool_name, "--namespace", namespace, "--port", str(CONTAINER_PORT)]
    args += ["--max-queued", str(gateway.max_queued_requests)]
    args += ["--max-queue-wait", seconds_text(gateway.max_queue_wait_s)]
    args += ["--mixed-reserve-slots", str(gateway.mixed_reserve_slots)]
    args += ["--default-batch-deadline", seconds_text(spec.slo.batch_deadline_s)]
    args += ["--interactive-reserve-slots", str(gateway.interactive_reserve_slots)]
    args += ["--batch-prefills-per-pod", str(gateway.batch_prefills_per_pod)]
    if not gateway.preempt_batch:
        args.append("--no-preempt-batch")
    if not gateway.batch_on_interactive:
        args.append("--no-batch-on-interactive")
    return args + store_args(gateway.store)


def _metadata(name: str, namespace: str, pool_name: str, pool_uid: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": lb.gateway_labels(pool_name),
        "ownerReferences": [lb.owner_reference(pool_name, pool_uid)],
    }


def build_gateway_deployment(
    pool_name: str, namespace: str, pool_uid: str, spec: LLMServingPoolSpec, *, image: str
) -> dict[str, Any]:
    """The `<pool>-gateway` Deployment; `image` unless the spec names one."""
    lb.check_pool_name(pool_name)
    name = lb.gateway_name(pool_name)
    pod_spec: dict[str, Any] = {
        "serviceAccountName": name,
        # The gateway watches the pool's pods and the pool itself through the API.
        "automountServiceAccountToken": True,
        "securityContext": {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
            # The kubelet hands the store's volume to the image's group, so the non-root user
            # can write it; OnRootMismatch skips re-chowning a large volume on every start.
            "fsGroup": RUN_AS,
            "fsGroupChangePolicy": "OnRootMismatch",
        },
        "terminationGracePeriodSeconds": drain.drain_timing(spec).grace_period_s,
        "containers": [_container(pool_name, namespace, spec, spec.gateway.image or image)],
        "volumes": [
            {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}},
            *store_volumes(pool_name, spec.gateway.store),
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, namespace, pool_name, pool_uid),
        "spec": {
            "replicas": spec.gateway.replicas,
            "selector": {"matchLabels": lb.gateway_selector(pool_name)},
            "strategy": rollout_strategy(spec.gateway.store),
            "revisionHistoryLimit": 5,
            "template": {
                "metadata": {
                    "labels": lb.gateway_labels(pool_name),
                    "annotations": {lb.ANNOTATION_DEFAULT_CONTAINER: lb.GATEWAY_COMPONENT},
                },
                "spec": pod_spec,
            },
        },
    }


def _container(
    pool_name: str, namespace: str, spec: LLMServingPoolSpec, image: str
) -> dict[str, Any]:
    probe = {"httpGet": {"path": HEALTH_PATH, "port": lb.PORT_NAME}, "timeoutSeconds": 3}
    container: dict[str, Any] = {
        "name": lb.GATEWAY_COMPONENT,
        "image": image,
        "command": list(GATEWAY_COMMAND),
        "args": gateway_args(pool_name, namespace, spec),
        "ports": [{"name": lb.PORT_NAME, "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            *store_env(spec.gateway.store),
        ],
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        # Generous: a busy event loop answers late, and a restart drops every relayed stream.
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
            *store_mounts(spec.gateway.store),
        ],
    }
    resources = spec.gateway.resources
    wanted = {"requests": dict(resources.requests), "limits": dict(resources.limits)}
    container["resources"] = {key: value for key, value in wanted.items() if value}
    hooks = drain.lifecycle(spec)
    if hooks is not None:
        container["lifecycle"] = hooks
    return container


def build_gateway_service(pool_name: str, namespace: str, pool_uid: str) -> dict[str, Any]:
    """The `<pool>` Service: port 80 to the gateway pods' `http` port."""
    lb.check_pool_name(pool_name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(lb.entrypoint_name(pool_name), namespace, pool_name, pool_uid),
        "spec": {
            "type": "ClusterIP",
            "selector": lb.gateway_selector(pool_name),
            "ports": [
                {
                    "name": lb.PORT_NAME,
                    "port": SERVICE_PORT,
                    "targetPort": lb.PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_gateway_service_account(pool_name: str, namespace: str, pool_uid: str) -> dict[str, Any]:
    """The `<pool>-gateway` ServiceAccount."""
    lb.check_pool_name(pool_name)
    name = lb.gateway_name(pool_name)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(name, namespace, pool_name, pool_uid),
    }


def build_gateway_role_binding(
    pool_name: str, namespace: str, pool_uid: str, *, cluster_role: str
) -> dict[str, Any]:
    """The `<pool>-gateway` RoleBinding: the gateway's ServiceAccount gets `cluster_role`'s
    permissions in the pool's namespace only."""
    lb.check_pool_name(pool_name)
    name = lb.gateway_name(pool_name)
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(name, namespace, pool_name, pool_uid),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    }


def gateway_endpoint(pool_name: str, namespace: str) -> str:
    """The URL clients send to: `http://<pool>.<namespace>.svc:80`."""
    return lb.gateway_endpoint(pool_name, namespace, SERVICE_PORT)
