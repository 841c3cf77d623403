"""The resources the dev cluster's API server serves, and how a posted CRD declares more.

Built-ins come from kmock's bundled discovery dump (a recent k3s). The custom resources the
operator and its tests touch are declared up front, as if their CRDs were installed: the pool,
kopf's peering objects and KEDA's ScaledObject (so that conflict detection can be exercised
without KEDA). A CustomResourceDefinition created through the API declares its resource too,
so `kubectl apply -f crds/` works as on a real cluster.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Final

import kmock

from chiron_operator.api import base as pool_api

VERBS: Final = frozenset(
    {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
)
CRDS: Final = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
PODS: Final = kmock.resource("", "v1", "pods")
NAMESPACES: Final = kmock.resource("", "v1", "namespaces")
# What a fresh cluster has; kopf, for one, serves a namespace only once it sees it exist.
INITIAL_NAMESPACES: Final = ("default", "kube-system", "kube-public", "kube-node-lease")
POOLS: Final = kmock.resource(pool_api.GROUP, pool_api.VERSION, pool_api.PLURAL)

CUSTOM: Final[Mapping[kmock.resource, Mapping[str, Any]]] = {
    POOLS: {
        "kind": pool_api.KIND,
        "singular": pool_api.SINGULAR,
        "namespaced": True,
        "shortnames": set(pool_api.SHORT_NAMES),
        "categories": set(pool_api.CATEGORIES),
        "subresources": {"status"},
    },
    kmock.resource("kopf.dev", "v1", "kopfpeerings"): {
        "kind": "KopfPeering",
        "singular": "kopfpeering",
        "namespaced": True,
    },
    kmock.resource("kopf.dev", "v1", "clusterkopfpeerings"): {
        "kind": "ClusterKopfPeering",
        "singular": "clusterkopfpeering",
        "namespaced": False,
    },
    kmock.resource("keda.sh", "v1alpha1", "scaledobjects"): {
        "kind": "ScaledObject",
        "singular": "scaledobject",
        "namespaced": True,
        "shortnames": {"so"},
        "subresources": {"status"},
    },
}

# Kinds served at two versions are stored once per version here (there is no conversion), so
# an object written at one version would be invisible at the other. Keeping only the version
# clients prefer makes discovery offer exactly one.
UNSERVED: Final = (kmock.resource("autoscaling", "v1", "horizontalpodautoscalers"),)


def declare(resources: kmock.ResourcesArray) -> set[kmock.resource]:
    """Declare the built-ins and the custom resources; returns the custom ones."""
    with warnings.catch_warnings():
        # kmock 0.8 reads its bundled file with a deprecated importlib.resources call.
        warnings.simplefilter("ignore", DeprecationWarning)
        resources.load_bundled()
    for resource in UNSERVED:
        if resource in resources:
            del resources[resource]
    for resource, fields in CUSTOM.items():
        resources[resource] = kmock.ResourceInfo(verbs=set(VERBS), **fields)
    return set(CUSTOM)


def declare_crd(resources: kmock.ResourcesArray, crd: Mapping[str, Any]) -> set[kmock.resource]:
    """Declare every served version of a CustomResourceDefinition; returns the resources."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    declared = set()
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = set((version.get("subresources") or {}).keys())
        resource = kmock.resource(spec.get("group"), version.get("name"), names.get("plural"))
        resources[resource] = kmock.ResourceInfo(
            kind=names.get("kind"),
            singular=names.get("singular"),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            shortnames=set(names.get("shortNames") or ()),
            categories=set(names.get("categories") or ()),
            subresources=subresources,
            verbs=set(VERBS),
        )
        declared.add(resource)
    return declared


def group_version(resource: kmock.resource) -> str:
    """The apiVersion of a resource's objects (`v1` for the core group)."""
    return f"{resource.group}/{resource.version}" if resource.group else str(resource.version)
