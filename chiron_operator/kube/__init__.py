"""Kubernetes objects of a pool: pure builders and patches, conflict checks, and a thin client.

Everything but `KubeClient` is pure (dicts in, dicts out) so that the operator's decisions about
objects are testable without a cluster. `KubeClient` is the only module here that does I/O.
"""

from chiron_operator.kube.client import KubeApiError, KubeClient
from chiron_operator.kube.conflicts import Conflict, ConflictReason, find_conflicts
from chiron_operator.kube.deployments import (
    applied_max_num_seqs,
    applied_replicas,
    build_deployment,
    max_num_seqs_of,
    vllm_args,
    with_max_num_seqs,
)
from chiron_operator.kube.drain import DrainTiming, drain_timing
from chiron_operator.kube.events import EventType, build_event
from chiron_operator.kube.gateway import (
    build_gateway_deployment,
    build_gateway_role_binding,
    build_gateway_service,
    build_gateway_service_account,
    gateway_args,
    gateway_endpoint,
)
from chiron_operator.kube.gateway_store import build_store_claim, store_claim_name
from chiron_operator.kube.labels import (
    check_pool_name,
    deployment_name,
    entrypoint_name,
    gateway_name,
    pool_selector,
    role_labels,
    role_selector,
    selector_text,
    service_name,
)
from chiron_operator.kube.patches import (
    current_deletion_cost,
    deletion_costs,
    max_num_seqs_patch,
    pod_deletion_cost_patch,
    replicas_patch,
)
from chiron_operator.kube.services import build_services

__all__ = [
    "Conflict",
    "ConflictReason",
    "DrainTiming",
    "EventType",
    "KubeApiError",
    "KubeClient",
    "applied_max_num_seqs",
    "applied_replicas",
    "build_deployment",
    "build_event",
    "build_gateway_deployment",
    "build_gateway_role_binding",
    "build_gateway_service",
    "build_gateway_service_account",
    "build_services",
    "build_store_claim",
    "check_pool_name",
    "current_deletion_cost",
    "deletion_costs",
    "deployment_name",
    "drain_timing",
    "entrypoint_name",
    "find_conflicts",
    "gateway_args",
    "gateway_endpoint",
    "gateway_name",
    "max_num_seqs_of",
    "max_num_seqs_patch",
    "pod_deletion_cost_patch",
    "pool_selector",
    "replicas_patch",
    "role_labels",
    "role_selector",
    "selector_text",
    "service_name",
    "store_claim_name",
    "vllm_args",
    "with_max_num_seqs",
]
