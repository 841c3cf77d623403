"""A minimal asyncio client of the Kubernetes API for the dev cluster's own controllers.

The kubelet stand-in lives in the event loop next to the API server (and maybe the operator),
so it needs a non-blocking client; it also needs only a handful of calls on plain dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import aiohttp

MERGE_PATCH: Final = "application/merge-patch+json"

Json = dict[str, Any]


class ApiError(Exception):
    """A non-2xx answer; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class AsyncApi:
    """Calls on one API server with one bearer token."""

    def __init__(self, url: str, session: aiohttp.ClientSession, token: str | None) -> None:
        self._url = url.rstrip("/")
        self.session = session
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: object = None,
        content_type: str = "application/json",
    ) -> Json:
        """One call; raises ApiError unless the server answers 2xx with a JSON object."""
        headers = {**self._headers, "Content-Type": content_type}
        async with self.session.request(
            method, self._url + path, params=dict(query or {}), json=body, headers=headers
        ) as response:
            data = await response.json(content_type=None)
            if not 200 <= response.status < 300:
                message = data.get("message") if isinstance(data, dict) else str(data)
                raise ApiError(response.status, str(message))
        if not isinstance(data, dict):
            raise ApiError(response.status, f"expected a JSON object, got {data!r}")
        return data

    async def items(self, path: str, selector: str | None = None) -> list[Json]:
        """The items of a LIST, optionally filtered by a label selector."""
        query = {"labelSelector": selector} if selector else None
        return list((await self.request("GET", path, query=query)).get("items") or [])

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> Json:
        """A JSON merge patch."""
        return await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
