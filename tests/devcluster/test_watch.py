"""WATCH as kopf and informers rely on it: subscribe before the snapshot, resume from a
resourceVersion, filtered streams, timeouts, 410 Gone and initial-events bookmarks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from chiron_operator.devcluster.cluster.apiserver import (
    ApiServerHandle,
    DevApiServer,
    start_apiserver,
)

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def create(http: aiohttp.ClientSession, url: str, name: str, **labels: str) -> dict[str, Any]:
    body = {"metadata": {"name": name, "labels": labels}}
    async with http.post(url + CONFIGMAPS, json=body) as response:
        assert response.status == 201
        created: dict[str, Any] = await response.json()
        return created


async def relabel(http: aiohttp.ClientSession, url: str, name: str, **labels: str) -> None:
    headers = {"Content-Type": "application/merge-patch+json"}
    async with http.patch(
        f"{url}{CONFIGMAPS}/{name}", json={"metadata": {"labels": labels}}, headers=headers
    ) as response:
        assert response.status == 200


async def events(
    http: aiohttp.ClientSession, url: str, count: int | None, **params: str
) -> list[dict[str, Any]]:
    """The first `count` events of a watch (all of them when it ends, for count=None)."""
    found: list[dict[str, Any]] = []
    async with (
        asyncio.timeout(5),
        http.get(url + CONFIGMAPS, params={"watch": "true", **params}) as response,
    ):
        async for line in response.content:
            if line.strip():
                found.append(json.loads(line))
            if count is not None and len(found) >= count:
                break
    return found


def summary(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in found]


async def test_watch_replays_the_state_then_streams_changes(
    apiserver: ApiServerHandle, http: aiohttp.ClientSession
) -> None:
    url = apiserver.url
    await create(http, url, "a")
    watching = asyncio.create_task(events(http, url, 4))
    await asyncio.sleep(0.1)
    await create(http, url, "b")
    await relabel(http, url, "a", x="1")
    async with http.delete(f"{url}{CONFIGMAPS}/b") as response:
        assert response.status == 200
    assert summary(await watching) == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]


async def test_no_change_is_lost_between_snapshot_and_stream(
    apiserver: ApiServerHandle, http: aiohttp.ClientSession
) -> None:
    url = apiserver.url
    watching = asyncio.create_task(events(http, url, 40))
    await asyncio.gather(*(create(http, url, f"cm{n}") for n in range(40)))
    names = [name for _, name in summary(await watching)]
    assert sorted(names) == sorted(f"cm{n}" for n in range(40))


async def test_watch_resumes_after_a_resource_version(
    apiserver: ApiServerHandle, http: aiohttp.ClientSession
) -> None:
    url = apiserver.url
    await create(http, url, "before")
    async with http.get(url + CONFIGMAPS) as response:
        version = (await response.json())["metadata"]["resourceVersion"]
    await create(http, url, "after")
    found = await events(http, url, 1, resourceVersion=version)
    assert summary(found) == [("ADDED", "after")]


async def test_filtered_watches_see_objects_leave_and_enter(
    apiserver: ApiServerHandle, http: aiohttp.ClientSession
) -> None:
    url = apiserver.url
    await create(http, url, "a", role="mixed")
    await create(http, url, "b", role="batch")
    watching = asyncio.create_task(events(http, url, 3, labelSelector="role=mixed"))
    await asyncio.sleep(0.1)
    await relabel(http, url, "a", role="batch")
    await relabel(http, url, "b", role="mixed")
    assert summary(await watching) == [("ADDED", "a"), ("DELETED", "a"), ("ADDED", "b")]


async def test_timeout_seconds_ends_the_stream(
    apiserver: ApiServerHandle, http: aiohttp.ClientSession
) -> None:
    await create(http, apiserver.url, "a")
    start = asyncio.get_running_loop().time()
    found = await events(http, apiserver.url, None, timeoutSeconds="1")
    assert summary(found) == [("ADDED", "a")]
    assert asyncio.get_running_loop().time() - start < 3


async def test_initial_events_end_with_a_bookmark(
    apiserver: ApiServerHandle, http: aiohttp.ClientSession
) -> None:
    await create(http, apiserver.url, "a")
    found = await events(
        http, apiserver.url, 2, sendInitialEvents="true", resourceVersionMatch="NotOlderThan"
    )
    assert found[0]["type"] == "ADDED"
    assert found[1]["type"] == "BOOKMARK"
    annotations = found[1]["object"]["metadata"]["annotations"]
    assert annotations == {"k8s.io/initial-events-end": "true"}


async def test_too_old_resource_versions_are_gone(http: aiohttp.ClientSession) -> None:
    url, handle = await start_apiserver(emulator=DevApiServer(change_limit=3))
    try:
        for n in range(6):
            await create(http, url, f"cm{n}")
        found = await events(http, url, None, resourceVersion="1")
        assert [e["type"] for e in found] == ["ERROR"]
        assert found[0]["object"]["code"] == 410
    finally:
        await handle.close()


async def test_closing_the_server_ends_open_watches(http: aiohttp.ClientSession) -> None:
    url, handle = await start_apiserver()
    watching = asyncio.create_task(events(http, url, None))
    await asyncio.sleep(0.1)
    await handle.close()
    assert await asyncio.wait_for(watching, 3) == []
