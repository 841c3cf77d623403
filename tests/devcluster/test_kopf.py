"""A real kopf 1.45.2 operator against the dev cluster: finalizers, status, events, peering.

The operator runs in a thread with its own event loop: kopf cancels every task started after
it when it stops, so as a task of the test's loop it would take the API server down with it.
Assertions read the server's state, not the operator's logs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import kmock
import kopf
import pytest

from chiron_operator.devcluster.cluster.apiserver import ApiServerHandle
from chiron_operator.devcluster.cluster.resources import POOLS
from chiron_operator.kube import KubeClient
from tests.devcluster.support import eventually

PEERINGS = kmock.resource("kopf.dev/v1/kopfpeerings")
EVENTS = kmock.resource("v1/events")
POOLS_PATH = "/apis/chiron.io/v1alpha1/namespaces/default/llmservingpools"
FINALIZER = "chiron.io/test-finalizer"


def operator_registry(url: str, seen: list[tuple[str, str]]) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.posting.level = logging.INFO

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True, token="dummy")

    @kopf.on.create("chiron.io", "v1alpha1", "llmservingpools", registry=registry)
    def created(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        patch.status["phase"] = "Seen"
        kopf.info(body, reason="Seen", message="the pool was seen")
        kopf.info(body, reason="SeenAgain", message="and seen again")
        seen.append(("create", body["metadata"]["name"]))

    @kopf.on.delete("chiron.io", "v1alpha1", "llmservingpools", registry=registry)
    def deleted(body: kopf.Body, **_: Any) -> None:
        seen.append(("delete", body["metadata"]["name"]))

    return registry


@pytest.fixture
async def operator(apiserver: ApiServerHandle) -> AsyncIterator[list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    registry = operator_registry(apiserver.url, seen)
    stop, ready = threading.Event(), threading.Event()

    def run() -> None:
        asyncio.run(
            kopf.operator(
                registry=registry,
                peering_name="chiron-test",
                namespaces=["default"],
                stop_flag=stop,
                ready_flag=ready,
            )
        )

    # kopf's peering object must exist before it starts (kopf does not create it).
    apiserver.emulator.store.create(PEERINGS, "default", {"metadata": {"name": "chiron-test"}})
    thread = threading.Thread(target=run, name="kopf-operator", daemon=True)
    thread.start()
    try:
        # Waits go to threads: the API server kopf talks to is served by this very loop.
        assert await asyncio.to_thread(ready.wait, 10)
        yield seen
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive()


async def test_kopf_operator_handles_a_pool(
    apiserver: ApiServerHandle, kube: KubeClient, operator: list[tuple[str, str]]
) -> None:
    store = apiserver.emulator.store
    body = {"metadata": {"name": "p1"}, "spec": {"model": "m"}}
    await asyncio.to_thread(kube.request, "POST", POOLS_PATH, body=body)
    key = (POOLS, "default", "p1")

    async def handled() -> dict[str, Any] | None:
        pool = store.live(key)
        return pool if pool and (pool.get("status") or {}).get("phase") == "Seen" else None

    pool = await eventually(handled)
    assert pool["metadata"]["finalizers"] == [FINALIZER]  # added with a JSON patch + test op

    async def posted() -> list[dict[str, Any]] | None:
        found = [e for e in store.items(EVENTS, "default") if e["involvedObject"]["name"] == "p1"]
        return found if len(found) == 2 else None

    events = await eventually(posted)  # kopf posts events in the background
    assert sorted(e["reason"] for e in events) == ["Seen", "SeenAgain"]
    assert len({e["metadata"]["name"] for e in events}) == 2  # generateName honoured

    peering = store.live((PEERINGS, "default", "chiron-test"))
    assert peering is not None and peering.get("status")  # kopf announced itself

    await asyncio.to_thread(kube.request, "DELETE", f"{POOLS_PATH}/p1")

    async def released() -> bool:
        return store.live(key) is None

    await eventually(released)
    assert operator == [("create", "p1"), ("delete", "p1")]
    server_errors = [
        e for level in apiserver.emulator._errors for e in level if getattr(e, "status", 500) >= 500
    ]
    assert server_errors == []
