"""Names, labels and annotations the operator writes on the objects it owns.

Every key here is read back by someone: the Services select pods by the `serves-*` labels, the
metrics adapter and the dev cluster match pods by `chiron.io/pool` and `chiron.io/role`, and the
conflict check compares `chiron.io/applied-replicas` with the live replica count. Renaming one
breaks pools that already run, so treat them like an API.
"""

from __future__ import annotations

import re
from typing import Final

from chiron_operator.api.base import API_VERSION, KIND
from chiron_operator.core.enums import RequestClass, Role

MANAGED_BY: Final = "chiron-operator"
CONTAINER_NAME: Final = "vllm"
PORT_NAME: Final = "http"
# The gateway's pods are found by this component label (`gateway.discovery` counts the replicas
# sharing the caps by it); they carry no role label, so nothing counts them as vLLM pods.
GATEWAY_COMPONENT: Final = "gateway"
GATEWAY_APP: Final = "chiron-gateway"

LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_POOL: Final = "chiron.io/pool"
LABEL_ROLE: Final = "chiron.io/role"
LABEL_SERVES_INTERACTIVE: Final = "chiron.io/serves-interactive"
LABEL_SERVES_BATCH: Final = "chiron.io/serves-batch"

ANNOTATION_APPLIED_REPLICAS: Final = "chiron.io/applied-replicas"
ANNOTATION_MAX_NUM_SEQS: Final = "chiron.io/max-num-seqs"
# The operator's own restarts and resizes of a role Deployment, in unix seconds (`bookings`):
# written with each change, read back every tick, so the restart budget and the cooldowns
# survive a status write lost to a crash.
ANNOTATION_RESTARTS: Final = "chiron.io/restarts-unix-s"
ANNOTATION_LAST_SCALE_UP: Final = "chiron.io/last-scale-up-unix-s"
ANNOTATION_LAST_SCALE_DOWN: Final = "chiron.io/last-scale-down-unix-s"
ANNOTATION_DELETION_COST: Final = "controller.kubernetes.io/pod-deletion-cost"
ANNOTATION_DEFAULT_CONTAINER: Final = "kubectl.kubernetes.io/default-container"

SERVES_LABEL: Final = {
    RequestClass.INTERACTIVE: LABEL_SERVES_INTERACTIVE,
    RequestClass.BATCH: LABEL_SERVES_BATCH,
}
ROLE_SERVES: Final = {
    Role.INTERACTIVE: (RequestClass.INTERACTIVE,),
    Role.MIXED: (RequestClass.INTERACTIVE, RequestClass.BATCH),
    Role.BATCH: (RequestClass.BATCH,),
}

# Service names are DNS-1035 labels (63 characters) and `<pool>-interactive` is the longest
# name derived from a pool (`<pool>-gateway` is shorter; `<pool>`, the gateway's Service, is the
# pool name itself); the pool name is also a label value (63 characters).
MAX_POOL_NAME: Final = 63 - len("-interactive")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def check_pool_name(pool_name: str) -> None:
    """Raise ValueError unless every object name derived from `pool_name` is valid."""
    if len(pool_name) > MAX_POOL_NAME or not _DNS_LABEL.match(pool_name):
        raise ValueError(
            f"pool name {pool_name!r} must be a DNS-1035 label of at most {MAX_POOL_NAME} "
            "characters: its Services are named <pool>, <pool>-interactive and <pool>-batch"
        )


def deployment_name(pool_name: str, role: Role) -> str:
    """The Deployment running one role of a pool: `<pool>-<role>`."""
    return f"{pool_name}-{role.value}"


def service_name(pool_name: str, request_class: RequestClass) -> str:
    """The Service a traffic class of a pool is sent to: `<pool>-<class>`."""
    return f"{pool_name}-{request_class.value}"


def gateway_name(pool_name: str) -> str:
    """The gateway's Deployment, ServiceAccount and RoleBinding: `<pool>-gateway`."""
    return f"{pool_name}-{GATEWAY_COMPONENT}"


def entrypoint_name(pool_name: str) -> str:
    """The Service in front of the gateway, the pool's one entrypoint: `<pool>`."""
    return pool_name


def gateway_endpoint(pool_name: str, namespace: str, port: int) -> str:
    """The in-cluster URL of the pool's entrypoint Service."""
    return f"http://{entrypoint_name(pool_name)}.{namespace}.svc:{port}"


def gateway_selector(pool_name: str) -> dict[str, str]:
    """The (immutable) pod selector of the gateway's Deployment, and its Service's selector."""
    return {LABEL_POOL: pool_name, LABEL_COMPONENT: GATEWAY_COMPONENT}


def gateway_labels(pool_name: str) -> dict[str, str]:
    """The labels of the gateway's objects and pods: the pool's, but no role."""
    return {
        LABEL_NAME: GATEWAY_APP,
        LABEL_INSTANCE: pool_name,
        LABEL_COMPONENT: GATEWAY_COMPONENT,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_POOL: pool_name,
    }


def pool_selector(pool_name: str) -> dict[str, str]:
    """Labels every object of the pool carries."""
    return {LABEL_POOL: pool_name, LABEL_MANAGED_BY: MANAGED_BY}


def role_selector(pool_name: str, role: Role) -> dict[str, str]:
    """The (immutable) pod selector of a role's Deployment."""
    return {LABEL_POOL: pool_name, LABEL_ROLE: role.value}


def selector_text(labels: dict[str, str]) -> str:
    """An equality label selector as the API's `labelSelector` query parameter spells it."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def role_labels(pool_name: str, role: Role) -> dict[str, str]:
    """The labels of a role's Deployment and pods, `serves-*` included."""
    labels = {
        LABEL_NAME: "vllm",
        LABEL_INSTANCE: pool_name,
        LABEL_COMPONENT: role.value,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_POOL: pool_name,
        LABEL_ROLE: role.value,
    }
    for request_class in ROLE_SERVES[role]:
        labels[SERVES_LABEL[request_class]] = "true"
    return labels


def owner_reference(pool_name: str, pool_uid: str) -> dict[str, object]:
    """The controller reference to the pool: deleting the pool deletes what it owns."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": pool_name,
        "uid": pool_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
