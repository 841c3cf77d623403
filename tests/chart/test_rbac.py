"""RBAC: least privilege, exactly the documented rules, and nothing else, in every values case."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.chart.rbac import (
    CLUSTER,
    DOCUMENTED,
    GATEWAY_DOCUMENTED,
    RELEASE,
    Where,
    allows,
    expected_grants,
    rendered_grants,
)
from tests.chart.support import (
    CASES,
    NAMESPACE,
    ROOT,
    merged_values,
    objects,
    of_kind,
    parse,
    render,
)

RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
DANGEROUS_VERBS = {"delete", "deletecollection", "update", "escalate", "bind", "impersonate"}
# The gateway's objects, deleted when a pool's gateway is disabled; nothing else is deleted.
DELETABLE = {"deployments", "services", "serviceaccounts", "rolebindings"}


def gateway_role_name(case: str) -> str:
    return str(merged_values(case)["gateway"]["clusterRole"] or f"{RELEASE}-gateway")


def gateway_role(case: str) -> dict[str, Any] | None:
    name = gateway_role_name(case)
    roles = [r for r in of_kind(objects(case), "ClusterRole") if r["metadata"]["name"] == name]
    return roles[0] if roles else None


def _dangerous_use_is_allowed(rule: dict[str, Any], case: str) -> bool:
    """`delete` only of the gateway's object kinds; `bind` only of the gateway ClusterRole."""
    verbs = set(rule["verbs"]) & DANGEROUS_VERBS
    if verbs == {"delete"}:
        return set(rule["resources"]) <= DELETABLE
    if verbs == {"bind"}:
        return (
            rule["apiGroups"] == ["rbac.authorization.k8s.io"]
            and rule["resources"] == ["clusterroles"]
            and rule.get("resourceNames") == [gateway_role_name(case)]
        )
    return not verbs


def service_account(case: str) -> tuple[str, str]:
    values = merged_values(case)
    name = values["serviceAccount"]["name"] or "chiron-operator"
    return NAMESPACE, name


@pytest.mark.parametrize("case", CASES)
def test_rules_have_no_wildcards_and_no_dangerous_verbs(case: str) -> None:
    for role in of_kind(objects(case), "Role") + of_kind(objects(case), "ClusterRole"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert all("*" not in item for item in rule.get(key, [])), (role, rule)
            assert _dangerous_use_is_allowed(rule, case), rule
            assert "nonResourceURLs" not in rule


@pytest.mark.parametrize("case", CASES)
def test_secrets_only_by_name(case: str) -> None:
    values = merged_values(case)
    secret_rules = [
        (role, rule)
        for role in of_kind(objects(case), "Role") + of_kind(objects(case), "ClusterRole")
        for rule in role["rules"]
        if "secrets" in rule["resources"]
    ]
    name = values["prometheus"]["authSecret"]["name"]
    pool_names = values["prometheus"]["poolAuthSecretNames"]
    own = [(role, rule) for role, rule in secret_rules if rule["resourceNames"] == [name]]
    pools = [(role, rule) for role, rule in secret_rules if (role, rule) not in own]
    assert len(own) == (1 if name else 0)
    for role, rule in own:
        assert role["kind"] == "Role"
        assert role["metadata"]["namespace"] == NAMESPACE
        assert rule == {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [name],
            "verbs": ["get"],
        }
    # Pools' tokens: one Role of one rule per listed namespace (never a ClusterRole), names only.
    namespaces = values["prometheus"]["poolAuthSecretNamespaces"] or values["watchNamespaces"]
    assert len(pools) == (len(namespaces) if pool_names else 0)
    for role, rule in pools:
        assert role["kind"] == "Role"
        assert role["metadata"]["name"] == f"{RELEASE}-pool-auth"
        assert role["rules"] == [rule]
        assert rule == {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": pool_names,
            "verbs": ["get"],
        }


@pytest.mark.parametrize("case", CASES)
def test_rules_equal_the_documented_list(case: str) -> None:
    values = merged_values(case)
    granted = rendered_grants(objects(case), service_account(case))
    expected = expected_grants(values, NAMESPACE)
    assert granted - expected == set(), "granted beyond the documented list"
    assert expected - granted == set(), "documented but not granted"


@pytest.mark.parametrize("case", CASES)
def test_every_role_is_bound_to_the_operator_only(case: str) -> None:
    """Every Role and ClusterRole but the gateway's, which the operator binds per pool."""
    objs = objects(case)
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        for o in objs
        if o["kind"] in ("Role", "ClusterRole")
    }
    roles.discard(("ClusterRole", None, gateway_role_name(case)))
    bound = set()
    for binding in of_kind(objs, "RoleBinding") + of_kind(objs, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": service_account(case)[1],
                "namespace": NAMESPACE,
            }
        ]
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        bound.add((ref["kind"], namespace, ref["name"]))
    assert bound == roles


@pytest.mark.parametrize("case", CASES)
def test_the_gateway_role_is_exactly_its_documented_rules(case: str) -> None:
    role = gateway_role(case)
    assert role is not None
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    documented = {(r.group, r.resource, v) for r in GATEWAY_DOCUMENTED for v in r.verbs}
    assert granted == documented
    assert not any("resourceNames" in rule for rule in role["rules"])


@pytest.mark.parametrize("case", CASES)
def test_the_operator_may_bind_the_gateway_role_where_it_serves_and_nothing_else(case: str) -> None:
    values = merged_values(case)
    granted = rendered_grants(objects(case), service_account(case))
    name = gateway_role_name(case)
    rbac = "rbac.authorization.k8s.io"
    for namespace in values["watchNamespaces"] or ["anywhere"]:
        assert allows(granted, namespace, rbac, "clusterroles", "bind", name)
        assert not allows(granted, namespace, rbac, "clusterroles", "bind", "cluster-admin")
        assert allows(granted, namespace, rbac, "rolebindings", "create")
    assert not {g for g in granted if g.resource == "clusterroles" and g.verb != "bind"}


def test_rbac_off_renders_no_gateway_role_but_the_operator_still_names_it() -> None:
    values = {"rbac": {"create": False}, "gateway": {"clusterRole": "platform-gateway"}}
    objs = parse(render(values))
    assert not of_kind(objs, "ClusterRole")
    (operator,) = of_kind(objs, "Deployment")
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--gateway-cluster-role") + 1] == "platform-gateway"


def test_namespaced_scope_grants_nothing_cluster_wide_but_crd_discovery() -> None:
    case = "namespaced-values"
    granted = rendered_grants(objects(case), service_account(case))
    cluster = {(g.group, g.resource) for g in granted if g.namespace == CLUSTER}
    assert cluster == {("apiextensions.k8s.io", "customresourcedefinitions")}
    watched = merged_values(case)["watchNamespaces"]
    for namespace in watched:
        assert allows(granted, namespace, "apps", "deployments", "patch")
        assert allows(granted, namespace, "kopf.dev", "kopfpeerings", "patch")
    assert not allows(granted, "default", "apps", "deployments", "patch")
    assert not allows(granted, None, "", "namespaces", "list")


def test_cluster_scope_serving_all_namespaces_uses_the_cluster_peering() -> None:
    granted = rendered_grants(objects("default"), service_account("default"))
    assert allows(granted, "anywhere", "chiron.io", "llmservingpools", "watch")
    assert allows(granted, None, "kopf.dev", "clusterkopfpeerings", "patch")
    assert allows(granted, None, "", "namespaces", "watch")
    assert not allows(granted, "anywhere", "kopf.dev", "kopfpeerings", "patch")
    assert not allows(granted, NAMESPACE, "", "secrets", "get", "anything")


def test_standalone_grants_no_peering() -> None:
    case = "everything-values"
    assert not merged_values(case)["peering"]["enabled"]
    granted = rendered_grants(objects(case), service_account(case))
    assert not {g for g in granted if g.group == "kopf.dev"}


def test_auth_secret_is_readable_by_name_only() -> None:
    case = "auth-secret-values"
    name = merged_values(case)["prometheus"]["authSecret"]["name"]
    granted = rendered_grants(objects(case), service_account(case))
    assert allows(granted, NAMESPACE, "", "secrets", "get", name)
    assert not allows(granted, NAMESPACE, "", "secrets", "get", "another-secret")
    assert not allows(granted, NAMESPACE, "", "secrets", "list")
    assert not allows(granted, "llm", "", "secrets", "get", name)


def test_pool_auth_secrets_are_readable_by_name_in_the_watched_namespaces_only() -> None:
    case = "pool-auth-secrets-values"
    values = merged_values(case)
    names = values["prometheus"]["poolAuthSecretNames"]
    granted = rendered_grants(objects(case), service_account(case))
    for namespace in values["watchNamespaces"]:
        for name in names:
            assert allows(granted, namespace, "", "secrets", "get", name)
        assert not allows(granted, namespace, "", "secrets", "get", "another-secret")
        assert not allows(granted, namespace, "", "secrets", "list")
    assert not allows(granted, "default", "", "secrets", "get", names[0])
    assert not allows(granted, NAMESPACE, "", "secrets", "get", names[0])


def test_pool_auth_secrets_in_cluster_scope_are_granted_in_the_listed_namespaces_only() -> None:
    case = "multi-tenant-values"
    values = merged_values(case)
    assert values["rbac"]["scope"] == "cluster" and not values["watchNamespaces"]
    granted = rendered_grants(objects(case), service_account(case))
    for namespace in values["prometheus"]["poolAuthSecretNamespaces"]:
        assert allows(granted, namespace, "", "secrets", "get", "prometheus-token")
        assert not allows(granted, namespace, "", "secrets", "get", "other")
        assert not allows(granted, namespace, "", "secrets", "list")
    for elsewhere in ("kube-system", "default", "team-c", NAMESPACE):
        assert not allows(granted, elsewhere, "", "secrets", "get", "prometheus-token")
    assert not {g for g in granted if g.resource == "secrets" and g.namespace == CLUSTER}


def test_pool_auth_secrets_of_an_operator_serving_every_namespace_need_their_namespaces() -> None:
    values = {"prometheus": {"poolAuthSecretNames": ["prometheus-token"]}}
    with pytest.raises(Exception, match=r"needs prometheus\.poolAuthSecretNamespaces"):
        render(values)


def test_pool_auth_secret_namespaces_must_be_watched() -> None:
    values = {
        "rbac": {"scope": "namespaces"},
        "watchNamespaces": ["llm"],
        "prometheus": {
            "poolAuthSecretNames": ["prometheus-token"],
            "poolAuthSecretNamespaces": ["llm", "kube-system"],
        },
    }
    with pytest.raises(Exception, match="kube-system is not in watchNamespaces"):
        render(values)


def test_pool_auth_secret_namespaces_narrow_the_watched_ones() -> None:
    values = {
        "rbac": {"scope": "cluster"},
        "watchNamespaces": ["llm", "batch"],
        "prometheus": {
            "poolAuthSecretNames": ["prometheus-token"],
            "poolAuthSecretNamespaces": ["llm"],
        },
    }
    granted = rendered_grants(parse(render(values)), service_account("default"))
    assert allows(granted, "llm", "", "secrets", "get", "prometheus-token")
    assert not allows(granted, "batch", "", "secrets", "get", "prometheus-token")


def test_rbac_off_renders_no_rbac() -> None:
    objs = parse(render({"rbac": {"create": False}}))
    assert not [o for o in objs if o["kind"] in RBAC_KINDS]


def _install_table(marker: str) -> tuple[str, set[tuple[str, str, frozenset[str]]]]:
    """A marked table of docs/INSTALL.md, and its (group, resource, verbs) rows."""
    text = (ROOT / "docs" / "INSTALL.md").read_text()
    table = text.split(f"<!-- BEGIN {marker} -->")[1].split(f"<!-- END {marker} -->")[0]
    rows = set()
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[1].startswith("`"):
            continue
        group = cells[0].strip("`").replace('""', "")
        resource = cells[1].strip("`")
        verbs = frozenset(re.split(r",\s*", cells[2]))
        rows.add((group, resource, verbs))
    return table, rows


def test_install_guide_lists_the_gateways_rules() -> None:
    _, rows = _install_table("gateway-rbac")
    assert rows == {(r.group, r.resource, r.verbs) for r in GATEWAY_DOCUMENTED}


def test_install_guide_lists_the_same_rules() -> None:
    """docs/INSTALL.md's permission table is the documented list, row for row."""
    table, rows = _install_table("rbac")
    assert rows == {(r.group, r.resource, r.verbs) for r in DOCUMENTED}
    # Every place the table names must be one of the rules' places.
    assert {w.value for w in Where} >= {
        line.split("|")[4].strip()
        for line in table.splitlines()
        if line.startswith("| `") or line.startswith('| ""')
    }
