"""A fresh dev-cluster API server per test, with a kubeconfig and a client pointing at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from chiron_operator.devcluster.cluster.apiserver import (
    ApiServerHandle,
    start_apiserver,
    write_kubeconfig,
)
from chiron_operator.kube import KubeClient


@pytest.fixture
async def apiserver() -> AsyncIterator[ApiServerHandle]:
    _, handle = await start_apiserver()
    try:
        yield handle
    finally:
        await handle.close()


@pytest.fixture
def kubeconfig(apiserver: ApiServerHandle, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", apiserver.url)


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[KubeClient]:
    """A synchronous client: call it through asyncio.to_thread, since the server shares the
    test's event loop and a blocking call in the loop would never be answered."""
    with KubeClient.from_kubeconfig(kubeconfig) as client:
        yield client
