"""The gateway's batch store in its objects: the SQLite claim and mount, the PostgreSQL URL from a
Secret, the rollout each allows, and patches that switch a live Deployment between them."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from chiron_operator.api import parse_spec
from chiron_operator.devcluster.cluster.patching import strategic_merge_patch
from chiron_operator.gateway import cli as gateway_cli
from chiron_operator.kube import labels as lb
from chiron_operator.kube.gateway import build_gateway_deployment
from chiron_operator.kube.gateway_store import build_store_claim, deployment_patch
from chiron_operator.operator.drift import contains
from tests.kube.support import SPEC

POOL, NS, UID, IMAGE = "llama-70b", "llm", "pool-uid", "registry.example/chiron:1.2.3"
KUBE_VERSIONS = ("1.30.0", "1.37.0")
SQLITE_URL = "sqlite:////var/lib/chiron-gateway/batches.db"
SECRET = {"name": "gateway-store", "key": "dsn"}
POSTGRESQL = {"type": "PostgreSQL", "postgresql": {"urlSecretRef": SECRET}}
ON_POSTGRESQL = {"store": POSTGRESQL}


def spec(**gateway: Any) -> Any:
    return parse_spec({**SPEC, "gateway": gateway})


def deployment(**gateway: Any) -> dict[str, Any]:
    return build_gateway_deployment(POOL, NS, UID, spec(**gateway), image=IMAGE)


def pod(built: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = built["spec"]["template"]["spec"]
    return found


def container(built: dict[str, Any]) -> dict[str, Any]:
    (found,) = pod(built)["containers"]
    assert isinstance(found, dict)
    return found


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize(
    "gateway",
    [{}, {"store": {"sqlite": {"size": "20Gi", "storageClassName": "fast"}}}, ON_POSTGRESQL],
    ids=["sqlite", "sqlite-sized", "postgresql"],
)
def test_the_objects_are_valid_kubernetes(kube_version: str, gateway: dict[str, Any]) -> None:
    parsed = spec(**gateway)
    claim = build_store_claim(POOL, NS, UID, parsed.gateway.store)
    for obj in [deployment(**gateway), *([claim] if claim is not None else [])]:
        kubernetes_validate.validate(obj, kube_version, strict=True)


def test_sqlite_gets_a_claim_owned_by_the_pool() -> None:
    claim = build_store_claim(POOL, NS, UID, spec().gateway.store)
    assert claim is not None
    meta = claim["metadata"]
    assert (meta["name"], meta["namespace"]) == (f"{POOL}-gateway-store", NS)
    assert meta["labels"] == lb.gateway_labels(POOL)
    assert meta["ownerReferences"] == [lb.owner_reference(POOL, UID)]
    # The cluster's default StorageClass unless the pool names one.
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
    }
    sized = spec(store={"sqlite": {"size": "20Gi", "storageClassName": "fast"}}).gateway.store
    built = build_store_claim(POOL, NS, UID, sized)
    assert built is not None
    assert built["spec"]["resources"] == {"requests": {"storage": "20Gi"}}
    assert built["spec"]["storageClassName"] == "fast"


def test_sqlite_mounts_the_claim_and_names_the_file_in_args() -> None:
    built = deployment()
    volumes = {v["name"]: v for v in pod(built)["volumes"]}
    assert volumes["store"] == {
        "name": "store",
        "persistentVolumeClaim": {"claimName": f"{POOL}-gateway-store"},
    }
    gateway = container(built)
    assert {"name": "store", "mountPath": "/var/lib/chiron-gateway"} in gateway["volumeMounts"]
    assert gateway["args"][-2:] == ["--store", SQLITE_URL]
    assert [e["name"] for e in gateway["env"]] == ["POD_NAME"]
    # The image's user may write the volume (group-owned by its group).
    assert pod(built)["securityContext"]["fsGroup"] == 65532
    assert gateway["securityContext"]["runAsGroup"] == 65532


def test_sqlite_replaces_the_pod_never_running_two() -> None:
    """Recreate: a surged second pod would open the same file, or wait for ever for a
    ReadWriteOnce volume attached to the old pod's node."""
    assert deployment()["spec"]["strategy"] == {"type": "Recreate"}


def test_postgresql_reads_its_url_from_the_secret_only() -> None:
    built = deployment(replicas=3, store=POSTGRESQL)
    assert build_store_claim(POOL, NS, UID, spec(store=POSTGRESQL).gateway.store) is None
    gateway = container(built)
    assert "--store" not in gateway["args"]
    assert gateway["env"] == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "CHIRON_GATEWAY_STORE", "valueFrom": {"secretKeyRef": SECRET}},
    ]
    assert [m["mountPath"] for m in gateway["volumeMounts"]] == ["/tmp"]
    assert [v["name"] for v in pod(built)["volumes"]] == ["tmp"]
    assert built["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


def test_the_key_defaults_to_url() -> None:
    store = {"type": "PostgreSQL", "postgresql": {"urlSecretRef": {"name": "db"}}}
    env = container(deployment(store=store))["env"][-1]
    assert env["valueFrom"] == {"secretKeyRef": {"name": "db", "key": "url"}}


@pytest.mark.parametrize("gateway", [{}, ON_POSTGRESQL], ids=["sqlite", "postgresql"])
def test_both_stores_keep_the_pod_name_and_a_grace_period(gateway: dict[str, Any]) -> None:
    built = deployment(**gateway)
    assert container(built)["env"][0]["name"] == "POD_NAME"
    # The drain's grace period (spec.drain): the answers being relayed get to finish.
    assert pod(built)["terminationGracePeriodSeconds"] >= 30


def test_the_gateway_accepts_the_sqlite_args() -> None:
    args = container(deployment())["args"]
    config = gateway_cli.config_from(gateway_cli.parser().parse_args(args))
    assert config.store_url == SQLITE_URL


def _switched(before: dict[str, Any], after: dict[str, Any], gateway: dict[str, Any]) -> Any:
    """`before` (as stored) with the patch that brings it to `after` applied, as the API
    server's strategic merge applies it."""
    patch = deployment_patch(after, spec(**gateway).gateway.store)
    return strategic_merge_patch(copy.deepcopy(before), patch)


def test_switching_to_postgresql_drops_the_volume_and_the_recreate_strategy() -> None:
    before, after = deployment(), deployment(store=POSTGRESQL)
    live = _switched(before, after, ON_POSTGRESQL)
    assert contains(live["spec"], after["spec"])
    assert [v["name"] for v in pod(live)["volumes"]] == ["tmp"]
    assert [m["name"] for m in container(live)["volumeMounts"]] == ["tmp"]
    assert "--store" not in container(live)["args"]
    assert live["spec"]["strategy"]["type"] == "RollingUpdate"


def test_switching_to_sqlite_drops_the_secret_and_the_rolling_update() -> None:
    before, after = deployment(store=POSTGRESQL), deployment()
    live = _switched(before, after, {})
    assert contains(live["spec"], after["spec"])
    assert [e["name"] for e in container(live)["env"]] == ["POD_NAME"]
    # The server refuses a Recreate strategy that keeps a rollingUpdate section.
    assert live["spec"]["strategy"] == {"type": "Recreate"}


def test_a_patch_to_the_same_store_changes_nothing_else() -> None:
    for gateway in ({}, ON_POSTGRESQL):
        built = deployment(**gateway)
        assert _switched(built, built, gateway) == built
