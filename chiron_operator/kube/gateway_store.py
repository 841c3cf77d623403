"""The gateway's batch store in its pod and its volume (`spec.gateway.store`). Pure: no I/O.

- SQLite: the PersistentVolumeClaim `<pool>-gateway-store` (ReadWriteOnce, owned by the pool),
  mounted at /var/lib/chiron-gateway, and `--store sqlite:////var/lib/chiron-gateway/batches.db`.
  The Deployment is replaced with a Recreate rollout: two pods must never open one SQLite file,
  and a ReadWriteOnce volume cannot be attached to a surged pod on another node, which would
  leave a rolling update stuck.
- PostgreSQL: `$CHIRON_GATEWAY_STORE` from the Secret key `urlSecretRef` names (the kubelet
  reads it; `chiron-gateway` falls back to that variable without `--store`), so the URL and its
  password are in no pod spec and no process list; a rolling update, as without a store.

A strategic-merge patch only adds entries to lists merged by key (volumes, volumeMounts, env),
so a Deployment switched from one store to the other would keep the old store's volume (still
claiming the ReadWriteOnce volume) or its Secret reference (a pod whose Secret is gone does not
start). `deployment_patch` adds the directives that delete them.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from chiron_operator.api.store import StoreSpec, StoreType
from chiron_operator.kube import labels as lb

Json = dict[str, Any]

STORE_VOLUME: Final = "store"
STORE_DIR: Final = "/var/lib/chiron-gateway"
SQLITE_FILE: Final = "batches.db"
# `sqlite:///` and an absolute path: SQLAlchemy-style URLs put the path after the third slash.
SQLITE_URL: Final = f"sqlite:///{STORE_DIR}/{SQLITE_FILE}"
STORE_FLAG: Final = "--store"
STORE_ENV: Final = "CHIRON_GATEWAY_STORE"
CLAIM_SUFFIX: Final = "-store"

# Surge one pod and never go below the ready count: the gateway is the pool's only entrypoint.
ROLLING_UPDATE: Final = {
    "type": "RollingUpdate",
    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
}
RECREATE: Final = {"type": "Recreate"}


def store_claim_name(pool_name: str) -> str:
    """The SQLite store's PersistentVolumeClaim: `<pool>-gateway-store`."""
    return f"{lb.gateway_name(pool_name)}{CLAIM_SUFFIX}"


def store_args(store: StoreSpec) -> list[str]:
    """`--store` for SQLite; nothing for PostgreSQL (its URL comes from the environment)."""
    return [STORE_FLAG, SQLITE_URL] if store.type is StoreType.SQLITE else []


def store_env(store: StoreSpec) -> list[Json]:
    """`$CHIRON_GATEWAY_STORE` from the PostgreSQL store's Secret; nothing for SQLite."""
    if store.type is not StoreType.POSTGRESQL or store.postgresql is None:
        return []
    ref = store.postgresql.url_secret_ref
    return [{"name": STORE_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def store_volumes(pool_name: str, store: StoreSpec) -> list[Json]:
    """The pod's volume for the SQLite store's claim."""
    if store.type is not StoreType.SQLITE:
        return []
    claim = {"claimName": store_claim_name(pool_name)}
    return [{"name": STORE_VOLUME, "persistentVolumeClaim": claim}]


def store_mounts(store: StoreSpec) -> list[Json]:
    """The container's mount of the SQLite store's volume."""
    if store.type is not StoreType.SQLITE:
        return []
    return [{"name": STORE_VOLUME, "mountPath": STORE_DIR}]


def rollout_strategy(store: StoreSpec) -> Json:
    """Recreate with SQLite (one pod owns the file), else a rolling update."""
    return copy.deepcopy(RECREATE if store.type is StoreType.SQLITE else ROLLING_UPDATE)


def build_store_claim(
    pool_name: str, namespace: str, pool_uid: str, store: StoreSpec
) -> Json | None:
    """The SQLite store's PersistentVolumeClaim, or None for PostgreSQL.

    Owned by the pool, so it is deleted with the pool and not before: it holds the accepted
    batches, which must survive the gateway's restarts, a disabled gateway and its re-creation.
    """
    if store.type is not StoreType.SQLITE:
        return None
    lb.check_pool_name(pool_name)
    spec: Json = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": store.sqlite.size}},
    }
    if store.sqlite.storage_class_name is not None:
        spec["storageClassName"] = store.sqlite.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": store_claim_name(pool_name),
            "namespace": namespace,
            "labels": lb.gateway_labels(pool_name),
            "ownerReferences": [lb.owner_reference(pool_name, pool_uid)],
        },
        "spec": spec,
    }


def deployment_patch(deployment: Json, store: StoreSpec) -> Json:
    """A strategic-merge patch bringing a live gateway Deployment to `deployment`, deleting
    what the other store put there (see the module's description)."""
    patch = copy.deepcopy(deployment)
    pod = patch["spec"]["template"]["spec"]
    container = pod["containers"][0]
    if store.type is StoreType.SQLITE:
        # A Recreate strategy must not keep a rollingUpdate section: the server refuses it.
        patch["spec"]["strategy"]["rollingUpdate"] = None
        container["env"].append({"name": STORE_ENV, "$patch": "delete"})
    else:
        pod["volumes"].append({"name": STORE_VOLUME, "$patch": "delete"})
        container["volumeMounts"].append({"mountPath": STORE_DIR, "$patch": "delete"})
    return patch
