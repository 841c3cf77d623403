"""The models the pool's pods serve, asked of a ready pod and remembered for a while.

A batch whose lines name a model no pod serves fails validation naming the line, instead of
failing one request at a time upstream. When no pod answers (a pool scaling from nothing),
the models are unknown and not checked: a wrong model then fails upstream, line by line.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, Final

import aiohttp

from chiron_operator.core.enums import Role
from chiron_operator.gateway.dispatcher import Dispatcher

CACHE_S: Final = 30.0


class ModelCatalog:
    """`names()`: the model ids a ready pod lists at `/v1/models` (cached `CACHE_S`)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        session: Callable[[], aiohttp.ClientSession],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dispatcher = dispatcher
        self.session = session
        self.clock = clock
        self._names: frozenset[str] = frozenset()
        self._at_s = -CACHE_S

    async def names(self) -> frozenset[str]:
        if self._names and self.clock() - self._at_s < CACHE_S:
            return self._names
        found = await self._ask()
        if found:
            self._names, self._at_s = found, self.clock()
        return self._names

    async def listing(self) -> dict[str, Any] | None:
        """The first ready pod's `/v1/models` answer (batch pods last), or None."""
        pods = sorted(
            (p for p in self.dispatcher.pods.values() if p.ready),
            key=lambda p: (p.role is Role.BATCH, p.name),
        )
        timeout = aiohttp.ClientTimeout(total=5.0)
        for pod in pods:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with self.session().get(pod.url + "/v1/models", timeout=timeout) as answer:
                    if answer.status == 200:
                        found = await answer.json()
                        if isinstance(found, dict):
                            return found
        return None

    async def _ask(self) -> frozenset[str]:
        listing = await self.listing()
        data = listing.get("data") if listing else None
        if not isinstance(data, list):
            return frozenset()
        return frozenset(str(m["id"]) for m in data if isinstance(m, dict) and "id" in m)
