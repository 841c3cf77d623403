"""The Deployment of one role of a pool, built from the pool's template. Pure: no I/O.

The container runs `vllm serve <model> [user args] [operator flags]` with `command` set
explicitly. The vllm/vllm-openai image's ENTRYPOINT changed across releases (older ones run
`python3 -m vllm.entrypoints.openai.api_server`, which wants `--model`; newer ones run
`vllm serve`, which takes the model positionally and deprecates `--model`), so relying on it
would make the arguments depend on the image tag. An explicit `vllm serve` with a positional
model works on every image that ships the `vllm` CLI.

The operator's flags come last so that they are the ones vLLM sees even if a flag slipped past
validation into the user's args (argparse keeps the last occurrence).

Pods drain before they stop (preStop sleep, terminationGracePeriodSeconds and, when the pool
asks for it, vLLM's --shutdown-timeout): see `drain`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from chiron_operator.api.spec import LLMServingPoolSpec
from chiron_operator.api.template import PodTemplate, Toleration
from chiron_operator.api.vllm import GPU_RESOURCE, OPERATOR_OWNED_FLAGS
from chiron_operator.core.enums import Role
from chiron_operator.kube import drain
from chiron_operator.kube import labels as lb
from chiron_operator.kube.pod_security import (
    DEFAULT_VLLM_SECURITY,
    VllmSecurity,
    container_security_context,
    pod_security_context,
)

VLLM_COMMAND: Final = ("vllm", "serve")
MAX_NUM_SEQS_FLAG: Final = "--max-num-seqs"
HEALTH_PATH: Final = "/health"
SHM_VOLUME: Final = "dshm"

# Surge one pod and never go below the ready count: a --max-num-seqs change restarts every pod
# of the role, and doing that with maxUnavailable > 0 would drop serving capacity under load.
ROLLING_UPDATE: Final = {
    "type": "RollingUpdate",
    "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
}

_MAX_NUM_SEQS = next(flag for flag in OPERATOR_OWNED_FLAGS if flag.flag == MAX_NUM_SEQS_FLAG)


def vllm_args(spec: LLMServingPoolSpec, role: Role, max_num_seqs: int) -> list[str]:
    """The container args of a role's pods: model, user args, then the flags the operator owns."""
    if max_num_seqs < 1:
        raise ValueError(f"max_num_seqs must be at least 1, got {max_num_seqs}")
    template = spec.template
    args = [spec.model, *template.args]
    args += ["--port", str(template.port)]
    args += ["--tensor-parallel-size", str(template.tensor_parallel_size)]
    args += [MAX_NUM_SEQS_FLAG, str(max_num_seqs)]
    if role is Role.MIXED:
        # Interactive requests carry priority 0 and batch ones a larger value, so vLLM itself
        # preempts batch work when interactive work needs the room.
        args += ["--scheduling-policy", "priority"]
    return args + drain.shutdown_args(spec)


def with_max_num_seqs(args: Sequence[str], max_num_seqs: int) -> list[str]:
    """`args` with the --max-num-seqs setting replaced in place (appended if absent).

    Every other spelling or repetition of the flag is dropped, so exactly one value remains.
    """
    setting = [MAX_NUM_SEQS_FLAG, str(max_num_seqs)]
    out: list[str] = []
    placed = skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
        elif _MAX_NUM_SEQS.matches(arg):
            skip_value = "=" not in arg
            out += [] if placed else setting
            placed = True
        else:
            out.append(arg)
    return out if placed else [*out, *setting]


def max_num_seqs_of(args: Sequence[str]) -> int | None:
    """The --max-num-seqs value in container args (the last one wins, as in argparse)."""
    found: int | None = None
    for index, arg in enumerate(args):
        if not _MAX_NUM_SEQS.matches(arg):
            continue
        text = arg.split("=", 1)[1] if "=" in arg else _at(args, index + 1)
        if text is not None and text.isdigit():
            found = int(text)
    return found


def _at(args: Sequence[str], index: int) -> str | None:
    return args[index] if index < len(args) else None


def build_deployment(
    pool_name: str,
    namespace: str,
    pool_uid: str,
    spec: LLMServingPoolSpec,
    role: Role,
    *,
    replicas: int,
    max_num_seqs: int,
    security: VllmSecurity = DEFAULT_VLLM_SECURITY,
) -> dict[str, Any]:
    """The `<pool>-<role>` Deployment, owned by the pool, with `replicas` pods.

    The two counts are keyword-only: both are small ints, and swapping them would be a valid
    Deployment that is badly wrong. `security` is the operator's pod security policy
    (`pod_security`).
    """
    lb.check_pool_name(pool_name)
    if replicas < 0:
        raise ValueError(f"replicas must not be negative, got {replicas}")
    labels = lb.role_labels(pool_name, role)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": lb.deployment_name(pool_name, role),
            "namespace": namespace,
            "labels": labels,
            "annotations": {lb.ANNOTATION_APPLIED_REPLICAS: str(replicas)},
            "ownerReferences": [lb.owner_reference(pool_name, pool_uid)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": lb.role_selector(pool_name, role)},
            "strategy": ROLLING_UPDATE,
            "revisionHistoryLimit": 5,
            "template": _pod_template(spec, role, labels, max_num_seqs, security),
        },
    }


def _pod_template(
    spec: LLMServingPoolSpec,
    role: Role,
    labels: Mapping[str, str],
    max_num_seqs: int,
    security: VllmSecurity,
) -> dict[str, Any]:
    template = spec.template
    annotations = {
        **template.annotations,
        lb.ANNOTATION_DEFAULT_CONTAINER: lb.CONTAINER_NAME,
        lb.ANNOTATION_MAX_NUM_SEQS: str(max_num_seqs),
    }
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security_context(security),
        "containers": [_container(spec, role, max_num_seqs, security)],
        # vLLM's tensor-parallel workers exchange tensors through /dev/shm, and the container
        # runtime's default 64 MiB is too small for it.
        "volumes": [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}],
        # Long enough for the preStop sleep and the requests in flight (Kubernetes' 30 s default
        # would kill long generations mid-answer).
        "terminationGracePeriodSeconds": drain.drain_timing(spec).grace_period_s,
    }
    if template.node_selector:
        pod_spec["nodeSelector"] = dict(template.node_selector)
    if template.tolerations:
        pod_spec["tolerations"] = [_toleration(t) for t in template.tolerations]
    if template.service_account_name:
        pod_spec["serviceAccountName"] = template.service_account_name
    return {
        # The user's labels go first so that they can never override the selector's.
        "metadata": {"labels": {**template.labels, **labels}, "annotations": annotations},
        "spec": pod_spec,
    }


def _container(
    spec: LLMServingPoolSpec, role: Role, max_num_seqs: int, security: VllmSecurity
) -> dict[str, Any]:
    template = spec.template
    container: dict[str, Any] = {
        "name": lb.CONTAINER_NAME,
        "image": template.image,
        "command": list(VLLM_COMMAND),
        "args": vllm_args(spec, role, max_num_seqs),
        "ports": [{"name": lb.PORT_NAME, "containerPort": template.port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": HEALTH_PATH, "port": lb.PORT_NAME},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
        "securityContext": container_security_context(security, template.port),
    }
    hooks = drain.lifecycle(spec)
    if hooks is not None:
        container["lifecycle"] = hooks
    if template.env:
        container["env"] = [{"name": var.name, "value": var.value} for var in template.env]
    resources = _resources(template)
    if resources:
        container["resources"] = resources
    return container


def _resources(template: PodTemplate) -> dict[str, dict[str, str]]:
    requests = dict(template.resources.requests)
    limits = dict(template.resources.limits)
    # Kubernetes only accepts extended resources such as GPUs in limits (requests default to
    # them), so a GPU count given only as a request is moved to where the scheduler reads it.
    if GPU_RESOURCE in requests and GPU_RESOURCE not in limits:
        limits[GPU_RESOURCE] = requests[GPU_RESOURCE]
    resources: dict[str, dict[str, str]] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


def _toleration(toleration: Toleration) -> dict[str, Any]:
    wire = toleration.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {key: value for key, value in wire.items() if value != ""}


def applied_replicas(deployment: Mapping[str, Any]) -> int | None:
    """The replica count the operator last wrote into a Deployment, from its annotation."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    return _int_or_none(annotations.get(lb.ANNOTATION_APPLIED_REPLICAS))


def applied_max_num_seqs(deployment: Mapping[str, Any]) -> int | None:
    """The --max-num-seqs a Deployment's pod template runs, from its annotation."""
    template = (deployment.get("spec") or {}).get("template") or {}
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    return _int_or_none(annotations.get(lb.ANNOTATION_MAX_NUM_SEQS))


def _int_or_none(text: object) -> int | None:
    if isinstance(text, str) and text.strip().lstrip("-").isdigit():
        return int(text)
    return None
