"""Pools the API tests share: file locations, a minimal valid spec, and edits to it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "chiron.io_llmservingpools.yaml"
EXAMPLES_DIR = REPO / "deploy" / "examples"
EXAMPLE_NAMES = ("interactive-only", "mixed-interactive-batch", "llama-70b-tp4")

PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"


def minimal_spec() -> dict[str, Any]:
    """The smallest valid spec: only the required fields."""
    return {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "template": {"image": "vllm/vllm-openai:v0.11.0"},
        "prometheus": {"url": PROMETHEUS_URL},
    }


def edited(spec: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of `spec` with each dotted wire path (`roles.mixed.minReplicas`) set."""
    out = copy.deepcopy(spec)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = copy.deepcopy(value)
    return out


def load_example(name: str) -> dict[str, Any]:
    """One of deploy/examples as a dict."""
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / f"{name}.yaml").read_text())
    return loaded
