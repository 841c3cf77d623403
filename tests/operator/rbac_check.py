"""The operator's recorded API calls against the Helm chart's rendered RBAC.

Each call the audit log recorded is mapped to what kube-apiserver's authorizer sees (group,
`resource/subresource`, verb, namespace, name; `chiron_operator.devcluster.cluster.audit`) and
looked up in the grants the chart renders for given values (`tests.chart.rbac`). Non-resource
requests (API discovery, /version) are allowed to every authenticated user by the default
`system:discovery` binding, so they are checked to be exactly that and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chiron_operator.devcluster.cluster.audit import AuditRecord
from tests.chart.rbac import Grant, allows, rendered_grants
from tests.chart.support import NAMESPACE, RELEASE, parse, render

# What system:discovery (bound to system:authenticated) allows: discovery and version.
DISCOVERY = re.compile(r"^/(api|apis)(/[^/]+){0,2}/?$|^/version/?$|^/openapi/.*$")


def default_values(
    pool_secrets: Sequence[str] = (), pool_secret_namespaces: Sequence[str] = ()
) -> dict[str, Any]:
    """The chart's defaults (cluster scope, every namespace, peering), plus pool token names
    and the namespaces they are readable in (which serving every namespace requires)."""
    return {
        "prometheus": {
            "poolAuthSecretNames": list(pool_secrets),
            "poolAuthSecretNamespaces": list(pool_secret_namespaces),
        }
    }


def namespaced_values(
    namespaces: Sequence[str], pool_secrets: Sequence[str] = ()
) -> dict[str, Any]:
    """The namespaced scope (a Role per watched namespace), for the test's namespaces."""
    return {
        "rbac": {"scope": "namespaces"},
        "watchNamespaces": list(namespaces),
        "prometheus": {"poolAuthSecretNames": list(pool_secrets)},
    }


def chart_grants(values: Mapping[str, Any]) -> set[Grant]:
    """What the chart grants the operator's ServiceAccount for `values`."""
    return rendered_grants(parse(render(values)), (NAMESPACE, RELEASE))


def describe(record: AuditRecord) -> str:
    return f"{record.method} {record.path} {dict(record.query)}"


def denied(records: Iterable[AuditRecord], grants: set[Grant]) -> list[str]:
    """Every recorded call the grants do not allow (empty when all are allowed)."""
    out = []
    for record in records:
        attributes = record.attributes
        if attributes is None:
            if not DISCOVERY.match(record.path):
                out.append(f"non-resource {describe(record)}")
            continue
        name = attributes.name if attributes.verb in ("get", "patch", "update", "delete") else None
        if not allows(
            grants,
            attributes.namespace,
            attributes.group,
            attributes.resource,
            attributes.verb,
            name,
        ):
            out.append(
                f"{attributes.verb} {attributes.group or 'core'}/{attributes.resource} "
                f"in {attributes.namespace or 'cluster'} ({describe(record)})"
            )
    return sorted(set(out))


def used(records: Iterable[AuditRecord]) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every resource call, for asserting what a scenario covered."""
    return {(a.group, a.resource, a.verb) for r in records if (a := r.attributes) is not None}
