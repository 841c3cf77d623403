"""Kubernetes' own object validation, the parts checkable offline, for the objects a pool builds.

kubernetes-validate checks types and unknown fields but not what apimachinery's validation
adds on top: name formats and lengths, label keys and values, annotation keys, quantities,
resource names, environment variable names, port ranges. These are the rules a real API
server applies (k8s.io/apimachinery/pkg/util/validation and pkg/apis/core/validation) that a
pool's spec can reach; each violation is returned as a text naming the object and field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

from chiron_operator.api.template import QUANTITY_PATTERN

Json = Mapping[str, Any]

DNS1123_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
QUALIFIED_NAME: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE: Final = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Since Kubernetes 1.34 any printable ASCII but '=' is allowed; the chart supports 1.30, whose
# rule (C identifiers plus '-' and '.') is the stricter one.
ENV_NAME: Final = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
QUANTITY: Final = re.compile(QUANTITY_PATTERN)
STANDARD_RESOURCES: Final = frozenset({"cpu", "memory", "ephemeral-storage"})
MAX_ANNOTATIONS_BYTES: Final = 256 * 1024


def qualified_name_problems(key: str) -> list[str]:
    """Why `key` is no qualified name (`[prefix/]name`), or nothing."""
    prefix, _, name = key.rpartition("/")
    found = []
    if "/" in key and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        found.append(f"prefix {prefix!r} is no DNS-1123 subdomain")
    if len(name) > 63 or not QUALIFIED_NAME.match(name):
        found.append(f"name {name!r} is no qualified name of at most 63 characters")
    return found


def _labels(where: str, labels: Json | None) -> Iterator[str]:
    for key, value in (labels or {}).items():
        for problem in qualified_name_problems(str(key)):
            yield f"{where} label key {key!r}: {problem}"
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            yield f"{where} label {key!r}: invalid value {value!r}"


def _annotations(where: str, annotations: Json | None) -> Iterator[str]:
    size = 0
    for key, value in (annotations or {}).items():
        size += len(str(key)) + len(str(value))
        for problem in qualified_name_problems(str(key)):
            yield f"{where} annotation key {key!r}: {problem}"
    if size > MAX_ANNOTATIONS_BYTES:
        yield f"{where} annotations: {size} bytes, over {MAX_ANNOTATIONS_BYTES}"


def _metadata(obj: Json, name_pattern: re.Pattern[str], max_name: int) -> Iterator[str]:
    meta = obj["metadata"]
    name = str(meta["name"])
    where = f"{obj['kind']} {name}"
    if len(name) > max_name or not name_pattern.match(name):
        yield f"{where}: invalid name (at most {max_name} characters, {name_pattern.pattern})"
    yield from _labels(where, meta.get("labels"))
    yield from _annotations(where, meta.get("annotations"))


def _resources(where: str, resources: Json | None) -> Iterator[str]:
    resources = resources or {}
    for section in ("requests", "limits"):
        for name, value in (resources.get(section) or {}).items():
            standard = name in STANDARD_RESOURCES or name.startswith("hugepages-")
            if not standard and ("/" not in name or qualified_name_problems(name)):
                yield f"{where} resources.{section}[{name}]: no standard or qualified name"
            if not isinstance(value, str) or not QUANTITY.match(value):
                yield f"{where} resources.{section}[{name}]: invalid quantity {value!r}"


def _container(where: str, container: Json) -> Iterator[str]:
    for var in container.get("env") or []:
        if not ENV_NAME.match(str(var["name"])):
            yield f"{where} env {var['name']!r}: invalid variable name"
    for port in container.get("ports") or []:
        if not 1 <= int(port["containerPort"]) <= 65535:
            yield f"{where} port {port['containerPort']}: out of range"
    if not str(container.get("image", "")).strip() or any(c.isspace() for c in container["image"]):
        yield f"{where} image {container.get('image')!r}: empty or with whitespace"
    yield from _resources(where, container.get("resources"))


def _pod_template(where: str, template: Json) -> Iterator[str]:
    meta = template.get("metadata") or {}
    yield from _labels(f"{where} pod", meta.get("labels"))
    yield from _annotations(f"{where} pod", meta.get("annotations"))
    pod = template["spec"]
    yield from _labels(f"{where} nodeSelector", pod.get("nodeSelector"))
    account = pod.get("serviceAccountName")
    if account is not None and (len(account) > 253 or not DNS1123_SUBDOMAIN.match(account)):
        yield f"{where} serviceAccountName {account!r}: no DNS-1123 subdomain"
    for toleration in pod.get("tolerations") or []:
        key = toleration.get("key")
        if key:
            yield from (
                f"{where} toleration key {key!r}: {p}" for p in qualified_name_problems(key)
            )
        if toleration.get("operator") == "Exists" and toleration.get("value"):
            yield f"{where} toleration {key!r}: value must be empty with operator Exists"
        if toleration.get("tolerationSeconds") is not None and toleration.get("effect") not in (
            None,
            "NoExecute",
        ):
            yield f"{where} toleration {key!r}: tolerationSeconds needs effect NoExecute"
    grace = pod.get("terminationGracePeriodSeconds")
    if grace is not None and not 0 <= int(grace) < 2**63:
        yield f"{where} terminationGracePeriodSeconds {grace}: out of range"
    for container in pod["containers"]:
        yield from _container(f"{where} container {container['name']}", container)


def object_problems(obj: Json) -> list[str]:
    """Every offline-checkable reason the API server would refuse `obj`."""
    kind = obj["kind"]
    if kind == "Service":
        found = list(_metadata(obj, DNS1035_LABEL, 63))
        for port in obj["spec"].get("ports") or []:
            if not 1 <= int(port["port"]) <= 65535:
                found.append(f"Service port {port['port']}: out of range")
        found += _labels("Service selector", obj["spec"].get("selector"))
        return found
    if kind in ("Deployment", "ServiceAccount", "RoleBinding", "PersistentVolumeClaim"):
        found = list(_metadata(obj, DNS1123_SUBDOMAIN, 253))
    else:
        raise ValueError(f"no offline rules for {kind}")
    if kind == "Deployment":
        # The Deployment's name is the ReplicaSets' and pods' name prefix, and a label value
        # of theirs (the pods' `pod-template-hash` is added to it).
        found += _labels("Deployment selector", obj["spec"]["selector"]["matchLabels"])
        found += _pod_template(f"Deployment {obj['metadata']['name']}", obj["spec"]["template"])
        if int(obj["spec"]["replicas"]) > 2**31 - 1:
            found.append(f"Deployment replicas {obj['spec']['replicas']}: over int32")
    if kind == "PersistentVolumeClaim":
        size = obj["spec"]["resources"]["requests"]["storage"]
        if not QUANTITY.match(size):
            found.append(f"PersistentVolumeClaim storage {size!r}: invalid quantity")
        storage_class = obj["spec"].get("storageClassName")
        if storage_class and not DNS1123_SUBDOMAIN.match(storage_class):
            found.append(f"PersistentVolumeClaim storageClassName {storage_class!r}: invalid")
    return found
