"""Helpers the dev cluster's tests share: polling, a trivial pod runtime, pool objects."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from chiron_operator.api import parse_spec
from chiron_operator.api.spec import LLMServingPoolSpec
from chiron_operator.devcluster.cluster.processes import Launch, ProcessSpec

T = TypeVar("T")

SPEC: dict[str, Any] = {
    "model": "meta-llama/Llama-3.1-8B-Instruct",
    "template": {
        "image": "vllm/vllm-openai:v0.11.0",
        "args": ["--max-model-len", "8192"],
        "env": [{"name": "HF_HOME", "value": "/cache"}],
    },
    "prometheus": {"url": "http://prometheus:9090"},
}


def pool_spec(**template: Any) -> LLMServingPoolSpec:
    """The test pool's spec, with template fields overridden."""
    return parse_spec({**SPEC, "template": {**SPEC["template"], **template}})


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Poll `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await probe()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {found!r})")
        await asyncio.sleep(interval)


@dataclass
class HealthServerRuntime:
    """Each pod runs `python -m http.server` over a directory holding a `health` file, so
    GET /health answers 200; the launches are recorded for assertions."""

    directory: Path
    launches: list[Launch] = field(default_factory=list)

    def process(self, launch: Launch) -> ProcessSpec:
        self.launches.append(launch)
        (self.directory / "health").write_text("ok\n")
        argv = (sys.executable, "-m", "http.server", str(launch.port), "--bind", "127.0.0.1")
        return ProcessSpec(argv=(*argv, "--directory", str(self.directory)), env=dict(os.environ))


def is_ready(pod: dict[str, Any]) -> bool:
    """Ready and not being deleted: what a Service would route to."""
    if pod["metadata"].get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def pid_alive(pid: int) -> bool:
    """Whether a process still exists (and is not a zombie we have reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
