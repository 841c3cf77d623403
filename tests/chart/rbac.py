"""The operator's API permissions: the documented list, and what a rendered chart grants.

`DOCUMENTED` is the contract (the Kubernetes calls the operator and kopf make, fixed by the
team); `expected_grants` says where the chart must grant each rule for given values, and
`rendered_grants` reads what rendered RBAC objects actually grant, expanded to one `Grant` per
(namespace, group, resource, verb, resource name), so a test of the operator's recorded API calls
can ask `allows(...)` of the same data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

CLUSTER = "*"  # the namespace of a grant bound by a ClusterRoleBinding
RELEASE = "chiron-operator"  # the full name of the release every test renders


class Where(Enum):
    """Where a rule applies."""

    WATCHED = "each watched namespace (all namespaces when none are listed)"
    CLUSTER = "cluster scope"
    ALL_NAMESPACES_MODE = "cluster scope, only when serving all namespaces"
    RELEASE = "the release namespace"
    POOL_AUTH = "each namespace of prometheus.poolAuthSecretNamespaces (default: watchNamespaces)"


@dataclass(frozen=True)
class Rule:
    group: str
    resource: str
    verbs: frozenset[str]
    where: Where
    peering: bool = False  # only with peering.enabled
    # The values key naming the only resources allowed (one name, or a list of names), and the
    # name the chart uses when that value is empty (None: no name, no rule).
    resource_name_value: str | None = None
    resource_name_default: str | None = None


def _rule(group: str, resource: str, verbs: str, where: Where, **kw: Any) -> Rule:
    return Rule(group, resource, frozenset(verbs.split()), where, **kw)


DOCUMENTED: tuple[Rule, ...] = (
    _rule("chiron.io", "llmservingpools", "get list watch patch", Where.WATCHED),
    _rule("chiron.io", "llmservingpools/status", "get patch", Where.WATCHED),
    _rule("apps", "deployments", "get list create patch delete", Where.WATCHED),
    _rule("", "services", "list create patch delete", Where.WATCHED),
    _rule("", "serviceaccounts", "get create patch delete", Where.WATCHED),
    _rule("rbac.authorization.k8s.io", "rolebindings", "get create patch delete", Where.WATCHED),
    _rule("", "persistentvolumeclaims", "get create", Where.WATCHED),
    _rule(
        "rbac.authorization.k8s.io",
        "clusterroles",
        "bind",
        Where.WATCHED,
        resource_name_value="gateway.clusterRole",
        resource_name_default=f"{RELEASE}-gateway",
    ),
    _rule("", "pods", "list patch", Where.WATCHED),
    _rule("", "events", "create", Where.WATCHED),
    _rule("autoscaling", "horizontalpodautoscalers", "list", Where.WATCHED),
    _rule("keda.sh", "scaledobjects", "list", Where.WATCHED),
    _rule("kopf.dev", "kopfpeerings", "get list watch patch", Where.WATCHED, peering=True),
    _rule(
        "kopf.dev",
        "clusterkopfpeerings",
        "get list watch patch",
        Where.ALL_NAMESPACES_MODE,
        peering=True,
    ),
    _rule("apiextensions.k8s.io", "customresourcedefinitions", "get list watch", Where.CLUSTER),
    _rule("", "namespaces", "get list watch", Where.ALL_NAMESPACES_MODE),
    _rule(
        "",
        "secrets",
        "get",
        Where.RELEASE,
        resource_name_value="prometheus.authSecret.name",
    ),
    _rule(
        "",
        "secrets",
        "get",
        Where.POOL_AUTH,
        resource_name_value="prometheus.poolAuthSecretNames",
    ),
)


# What each pool's gateway may do, in its pool's namespace: the rules of the gateway ClusterRole
# (bound per pool by the operator, not by the chart).
GATEWAY_DOCUMENTED: tuple[Rule, ...] = (
    _rule("", "pods", "get list watch", Where.WATCHED),
    _rule("chiron.io", "llmservingpools", "get watch", Where.WATCHED),
)


class Grant(NamedTuple):
    namespace: str  # CLUSTER for a cluster-wide grant
    group: str
    resource: str
    verb: str
    name: str | None  # None: any object of the resource


def _value(values: Mapping[str, Any], dotted: str) -> Any:
    node: Any = values
    for key in dotted.split("."):
        node = node[key]
    return node


def expected_grants(values: Mapping[str, Any], release_namespace: str) -> set[Grant]:
    """What the chart must grant for fully merged `values`, and nothing more."""
    watched: list[str] = list(values["watchNamespaces"])
    cluster_rbac = values["rbac"]["scope"] == "cluster"
    out: set[Grant] = set()
    for rule in DOCUMENTED:
        if rule.peering and not values["peering"]["enabled"]:
            continue
        # A namespaced peering object exists only for an operator serving listed namespaces.
        if rule.resource == "kopfpeerings" and not watched:
            continue
        names: list[str | None] = [None]
        if rule.resource_name_value is not None:
            named = _value(values, rule.resource_name_value) or rule.resource_name_default
            names = list(named) if isinstance(named, list) else [named] if named else []
            if not names:
                continue
        if rule.where is Where.WATCHED:
            namespaces = [CLUSTER] if cluster_rbac or not watched else watched
        elif rule.where is Where.CLUSTER:
            namespaces = [CLUSTER]
        elif rule.where is Where.ALL_NAMESPACES_MODE:
            namespaces = [] if watched else [CLUSTER]
        elif rule.where is Where.POOL_AUTH:
            namespaces = list(values["prometheus"]["poolAuthSecretNamespaces"] or watched)
        else:
            namespaces = [release_namespace]
        out |= {
            Grant(ns, rule.group, rule.resource, verb, name)
            for ns in namespaces
            for verb in rule.verbs
            for name in names
        }
    return out


def _expand(rules: Iterable[Mapping[str, Any]], namespace: str) -> set[Grant]:
    out: set[Grant] = set()
    for rule in rules:
        names: list[str | None] = list(rule.get("resourceNames") or [None])
        out |= {
            Grant(namespace, group, resource, verb, name)
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
            for name in names
        }
    return out


def rendered_grants(
    objs: Iterable[Mapping[str, Any]], service_account: tuple[str, str]
) -> set[Grant]:
    """Everything the rendered RBAC objects grant to `service_account` (namespace, name)."""
    objs = list(objs)
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objs
        if o["kind"] in ("Role", "ClusterRole")
    }
    out: set[Grant] = set()
    for binding in objs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subjects = {(s["kind"], s.get("namespace"), s["name"]) for s in binding["subjects"]}
        if ("ServiceAccount", *service_account) not in subjects:
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace")
        role_namespace = namespace if ref["kind"] == "Role" else None
        role = roles[(ref["kind"], role_namespace, ref["name"])]
        out |= _expand(role["rules"], namespace if binding["kind"] == "RoleBinding" else CLUSTER)
    return out


def allows(
    grants: Iterable[Grant],
    namespace: str | None,
    group: str,
    resource: str,
    verb: str,
    name: str | None = None,
) -> bool:
    """Whether the grants allow one API call (namespace None for a cluster-scoped resource)."""
    for grant in grants:
        if (grant.group, grant.resource, grant.verb) != (group, resource, verb):
            continue
        if grant.namespace not in (CLUSTER, namespace):
            continue
        if grant.name is None or grant.name == name:
            return True
    return False
