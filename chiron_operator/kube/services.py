"""The Services of a pool, one per traffic class. Pure: no I/O.

A label selector is a conjunction, so "interactive OR mixed pods" cannot be said with the role
label alone. Each pod therefore carries one `chiron.io/serves-<class>: "true"` label per
traffic class its role serves (interactive: interactive; mixed: both; batch: batch), and each
Service selects on its class's label plus the pool. Mixed pods are thus endpoints of both
Services, which is what makes them absorb batch work in the interactive headroom.
"""

from __future__ import annotations

from typing import Any

from chiron_operator.api.spec import LLMServingPoolSpec
from chiron_operator.core.enums import RequestClass
from chiron_operator.kube import labels as lb


def build_services(
    pool_name: str, namespace: str, pool_uid: str, spec: LLMServingPoolSpec
) -> list[dict[str, Any]]:
    """`<pool>-interactive` (interactive + mixed pods) and `<pool>-batch` (batch + mixed pods)."""
    lb.check_pool_name(pool_name)
    return [
        _service(pool_name, namespace, pool_uid, spec, request_class)
        for request_class in (RequestClass.INTERACTIVE, RequestClass.BATCH)
    ]


def _service(
    pool_name: str,
    namespace: str,
    pool_uid: str,
    spec: LLMServingPoolSpec,
    request_class: RequestClass,
) -> dict[str, Any]:
    labels = {
        lb.LABEL_NAME: "vllm",
        lb.LABEL_INSTANCE: pool_name,
        lb.LABEL_COMPONENT: request_class.value,
        **lb.pool_selector(pool_name),
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": lb.service_name(pool_name, request_class),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [lb.owner_reference(pool_name, pool_uid)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {lb.LABEL_POOL: pool_name, lb.SERVES_LABEL[request_class]: "true"},
            "ports": [
                {
                    "name": lb.PORT_NAME,
                    "port": spec.template.port,
                    "targetPort": lb.PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
