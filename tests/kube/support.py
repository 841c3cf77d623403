"""The pool the kube tests build objects for."""

from __future__ import annotations

from typing import Any

from chiron_operator.api import parse_spec
from chiron_operator.core.enums import Role
from chiron_operator.kube import build_deployment

K8S = "1.30.0"
SPEC: dict[str, Any] = {
    "model": "meta-llama/Llama-3.1-70B-Instruct",
    "template": {
        "image": "vllm/vllm-openai:v0.11.0",
        "args": ["--max-model-len", "8192", "--enable-prefix-caching"],
        "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
        "resources": {
            "requests": {"cpu": "16", "memory": "200Gi", "nvidia.com/gpu": 4},
            "limits": {"memory": "240Gi"},
        },
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "port": 8080,
        "tensorParallelSize": 4,
        "serviceAccountName": "weights-reader",
        "labels": {"team": "llm", "chiron.io/role": "spoofed"},
        "annotations": {"sidecar.istio.io/inject": "false"},
    },
    "prometheus": {"url": "http://prometheus:9090"},
}


def deployment(
    role: Role = Role.MIXED, replicas: int = 2, seqs: int = 64, uid: str = "pool-uid"
) -> dict[str, Any]:
    return build_deployment(
        "llama-70b", "llm", uid, parse_spec(SPEC), role, replicas=replicas, max_num_seqs=seqs
    )


def container(obj: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return found
