"""Prometheus `file_sd` targets for the dev cluster's ready pods.

A real cluster's Prometheus discovers pods through the Kubernetes API (a PodMonitor);
the dev cluster's pods are local processes on private ports, so the kubelet writes them into a
file Prometheus watches (`file_sd_configs`). The labels are what relabelling would produce
there: `namespace`, `pod`, and the pool's `chiron_io_role` / `chiron_io_pool`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chiron_operator.kube.labels import LABEL_POOL, LABEL_ROLE


@dataclass(frozen=True, slots=True)
class Target:
    """One ready pod's metrics endpoint."""

    namespace: str
    pod: str
    port: int
    labels: Mapping[str, str]


def target_groups(targets: Iterable[Target]) -> list[dict[str, Any]]:
    """The file_sd document: one target group per pod, sorted for stable output."""
    groups = []
    for target in sorted(targets, key=lambda t: (t.namespace, t.pod)):
        labels = {"namespace": target.namespace, "pod": target.pod}
        for key, name in ((LABEL_ROLE, "chiron_io_role"), (LABEL_POOL, "chiron_io_pool")):
            if key in target.labels:
                labels[name] = target.labels[key]
        groups.append({"targets": [f"127.0.0.1:{target.port}"], "labels": labels})
    return groups


def write_file_sd(path: Path, groups: list[dict[str, Any]]) -> bool:
    """Write the document atomically (Prometheus may read at any time); False if unchanged."""
    text = json.dumps(groups, indent=2) + "\n"
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return True
