"""The dev cluster's API server: kmock's KubernetesEmulator, made to behave like kube-apiserver
where kopf, kubectl and the kubernetes client depend on it.

What it adds to kmock 0.8 (docs/TESTING.md says what plain kmock does instead):
metadata.uid/resourceVersion/generation/creationTimestamp on create, a new resourceVersion on
every write and a new generation on spec changes, no-op writes that change nothing; optimistic
concurrency (409) on a stale resourceVersion; JSON-patch failures as 422; `generateName`;
strategic-merge, merge and JSON patches by content type (`patching`); PUT; the status and
scale subresources; namespaces that must exist (default, kube-system... do) and take their
objects along when deleted; graceful deletion of scheduled pods (deletionTimestamp, then the
kubelet's final delete); finalizers; garbage collection through ownerReferences (dependents of
a deleted owner, and objects created with owners that do not exist, are deleted); LIST with
`kind`/`apiVersion`/`resourceVersion` and label/field selectors; WATCH as a JSON stream that
subscribes before taking its snapshot, resumes from a resourceVersion (410 Gone when too old),
honours `timeoutSeconds`, selectors (objects leaving a selector are DELETED for that watcher)
and `sendInitialEvents`; CRDs that declare their resources; discovery kubectl can read.
JSON only: a protobuf body (kubectl's imperative `create configmap ...`) is answered 415, and
server-side apply too (see `patching`).

Pinned to kmock 0.8 internals (pyproject pins `kmock==0.8`): it overrides
`KubernetesEmulator._handle` and dispatches through `RawHandler._handle`, so that state changes
first and user reactions (`emulator['get /x'] << 503`) still take precedence over the default
responses; it replaces the `_serve_*` methods the emulator registers as fallback reactions
(bound at registration, so overriding them works); it renames Namespace requests around kmock's
path parser; it reads `_objects` (kmock's object histories, so `emulator.objects[...]`
assertions keep working), `_resources`, `_requests`, `_payloads` and `_errors`, and the parsed
`Request` fields. kmock's own lock and watch buses are unused: every state change
(`store.Store`) is synchronous code between awaits, which asyncio already runs atomically.
Objects written straight into `emulator.objects` bypass all of this: write through the API (or
`emulator.store`).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Final

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import apps, rendering

from chiron_operator.devcluster.cluster import objects as ob
from chiron_operator.devcluster.cluster import resources as rs
from chiron_operator.devcluster.cluster import wire
from chiron_operator.devcluster.cluster.objects import WriteError
from chiron_operator.devcluster.cluster.patching import PatchError
from chiron_operator.devcluster.cluster.selectors import (
    SelectorError,
    labels_of,
    parse_field_selector,
    parse_label_selector,
)
from chiron_operator.devcluster.cluster.store import Key, Store, Write, event_for, next_changes

Json = dict[str, Any]
Matcher = Callable[[Mapping[str, Any]], bool]

KMOCK_VERSION: Final = "0.8"
# kmock 0.8 parses /api/v1/namespaces/NAME as "namespace NAME" (and fails on the bare list),
# so requests for Namespace objects are renamed to a plural it parses, then renamed back.
_NAMESPACES_PATH: Final = re.compile(r"/api/v1/namespaces(?P<rest>(/[^/]+(/status|/finalize)?)?)/?")
_NAMESPACES_ALIAS: Final = kmock.resource("", "v1", "namespaces.devcluster")
_NAMED_WRITES: Final = (kmock.action.UPDATE, kmock.action.DELETE)


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status, reason, message, {"causes": []})


@attrs.define(kw_only=True)
class DevApiServer(kmock.KubernetesEmulator):
    """An in-memory kube-apiserver for the dev cluster and the tests."""

    namespaces: tuple[str, ...] = ()  # created at start, besides a fresh cluster's own
    history_limit: int = 50  # versions kept per object for assertions
    request_limit: int = 500  # requests kept for assertions (the demo runs for hours)
    change_limit: int = 10_000  # changes a watch can resume from
    # Sees every request as it arrives (an audit log); must not block or raise.
    on_request: Callable[[aiohttp.web.BaseRequest], None] | None = None

    store: Store = attrs.field(init=False)
    _results: dict[int, Json] = attrs.field(factory=dict, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        # Registered before kmock's own watch reaction so that it wins: kmock streams without
        # a Content-Type, and client-go (kubectl get -w) refuses application/octet-stream.
        json_stream: kmock.headers[str] = kmock.headers({"Content-Type": "application/json"})
        self.fallback[kmock.action.WATCH] << json_stream << self._serve_watch
        super().__attrs_post_init__()
        self.fallback[kmock.method.PUT] << self._serve_replace
        self.store = Store(
            self.objects,
            self.resources,
            history_limit=self.history_limit,
            change_limit=self.change_limit,
            namespaces=(*rs.INITIAL_NAMESPACES, *self.namespaces),
        )

    def close_watches(self) -> None:
        """End every open watch stream (clients see a normal end of stream and re-watch)."""
        self._closed = True
        self.store.close_watches()

    # Dispatch.

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if self.on_request is not None:
            self.on_request(raw_request)
        found = _NAMESPACES_PATH.fullmatch(raw_request.path)
        if found is not None:
            path = f"/api/v1/{_NAMESPACES_ALIAS.plural}{found['rest']}"
            url = raw_request.rel_url.with_path(path).with_query(raw_request.rel_url.query)
            raw_request = raw_request.clone(rel_url=url)
        return await super().__call__(raw_request)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        self._forget_old_requests()
        if request.resource == _NAMESPACES_ALIAS:
            # In place, not attrs.evolve: kmock matches reactions against the very request
            # object it recorded.
            object.__setattr__(request, "resource", rs.NAMESPACES)
        try:
            result = self._write(request)
        except (WriteError, PatchError, SelectorError) as exc:
            raise _error(
                getattr(exc, "status", 400), getattr(exc, "reason", "BadRequest"), str(exc)
            ) from exc
        if result is not None:
            self._results[id(request)] = result
        try:
            return await apps.RawHandler._handle(self, request)
        finally:
            self._results.pop(id(request), None)

    def _forget_old_requests(self) -> None:
        limit = self.request_limit
        if len(self._requests) <= 2 * limit:
            return
        del self._requests[:-limit]
        for payload in self._payloads:
            del payload._requests[:-limit]
        for errors in self._errors:
            del errors[:-limit]

    def _write(self, request: rendering.Request) -> Json | None:
        """Change the state for a write request (before any reaction answers it)."""
        resource = request.resource
        if resource is None:
            return None
        wire.check_body_type(request)
        if request.name is None:
            if request.action != kmock.action.CREATE:
                return None
            info = self.store.info(resource)
            if not isinstance(request.data, Mapping):
                raise WriteError(400, "BadRequest", "the request body must be a JSON object")
            namespace = wire.namespace(request, info, ob.metadata_of(request.data))
            return self.store.create(resource, namespace, request.data)
        if request.action == kmock.action.DELETE:
            return self.store.delete(self._key(request), wire.delete_options(request))
        if request.action == kmock.action.UPDATE or request.method == kmock.method.PUT:
            key = self._key(request)
            # PATCH carries its patch type; a PUT (None) replaces the object.
            patch_type = None
            if request.action == kmock.action.UPDATE:
                patch_type = wire.header(request, "Content-Type") or ""
            write = Write(
                key, self.store.info(key[0]), request.subresource, request.data, patch_type
            )
            return self.store.write(write)
        return None

    def _key(self, request: rendering.Request) -> Key:
        resource = _resource(request)
        info = self.store.info(resource)
        return resource, request.namespace if info.namespaced else None, str(request.name)

    # Default responses (fallback reactions).

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        # kmock writes the core group as "/v1" and repeats a resource's short names on its
        # subresources; kubectl then finds no core resources and warns about every short name.
        listing = await super()._serve_version(request)
        if not isinstance(listing, dict):
            return listing
        listing["groupVersion"] = str(listing.get("groupVersion", "")).lstrip("/")
        for entry in listing.get("resources", []):
            if "/" in entry.get("name", ""):
                entry.update(shortNames=[], categories=[], singularName="")
                entry["verbs"] = ["get", "patch", "update"]
        return listing

    async def _serve_create(self, request: rendering.Request) -> rendering.Payload:
        return rendering.Response(status=201, payload=self._results[id(request)])

    async def _serve_update(self, request: rendering.Request) -> rendering.Payload:
        result = self._results[id(request)]
        return ob.scale_of(result) if request.subresource == "scale" else result

    async def _serve_replace(self, request: rendering.Request) -> rendering.Payload:
        if id(request) not in self._results:
            raise _error(405, "MethodNotAllowed", "PUT is served on named objects only")
        return await self._serve_update(request)

    async def _serve_delete(self, request: rendering.Request) -> rendering.Payload:
        return self._results[id(request)]

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        try:
            key = self._key(request)
            obj = self.store.require(key)
        except WriteError as exc:
            raise _error(exc.status, exc.reason, str(exc)) from exc
        if request.subresource == "scale" and "scale" in self.store.info(key[0]).subresources:
            return ob.scale_of(obj)
        if request.subresource not in (None, "status"):
            raise _error(404, "NotFound", f"subresource {request.subresource!r} is not served")
        return obj

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        resource, info, namespace, matcher = self._query(request)
        return {
            "apiVersion": rs.group_version(resource),
            "kind": f"{info.kind or resource.plural}List",
            "metadata": {"resourceVersion": str(self.store.revision)},
            "items": [obj for obj in self.store.items(resource, namespace) if matcher(obj)],
        }

    def _query(
        self, request: rendering.Request
    ) -> tuple[kmock.resource, kmock.ResourceInfo, str | None, Matcher]:
        resource = _resource(request)
        try:
            info = self.store.info(resource)
            labels = parse_label_selector(request.params.get("labelSelector"))
            fields = parse_field_selector(request.params.get("fieldSelector"))
        except (WriteError, SelectorError) as exc:
            raise _error(
                getattr(exc, "status", 400), getattr(exc, "reason", "BadRequest"), str(exc)
            ) from exc
        name = request.name

        def matcher(obj: Mapping[str, Any]) -> bool:
            named = name is None or ob.metadata_of(obj).get("name") == name
            return named and labels(labels_of(obj)) and fields(obj)

        return resource, info, request.namespace if info.namespaced else None, matcher

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        resource, info, namespace, matcher = self._query(request)
        replay = self._replay(request, info, namespace, matcher)
        # Subscribed in the same synchronous step as the replay: no change can fall between.
        queue = self.store.subscribe(resource)
        try:
            yield b""
            for event in replay:
                yield event
            if self._closed or any(event["type"] == "ERROR" for event in replay):
                return
            async for change in next_changes(queue, wire.timeout(request)):
                found = event_for(change, namespace, matcher)
                if found is not None:
                    yield found
        finally:
            self.store.unsubscribe(resource, queue)

    def _replay(
        self,
        request: rendering.Request,
        info: kmock.ResourceInfo,
        namespace: str | None,
        matcher: Matcher,
    ) -> list[Json]:
        resource = _resource(request)
        since = request.params.get("resourceVersion") or "0"
        initial = request.params.get("sendInitialEvents") == "true"
        if initial or since == "0":
            items = self.store.items(resource, namespace)
            added: list[Json] = [{"type": "ADDED", "object": o} for o in items if matcher(o)]
            return [*added, self._initial_events_end(resource, info)] if initial else added
        if not since.isdigit():
            raise _error(400, "BadRequest", f"invalid resourceVersion: {since!r}")
        changes = self.store.changes_since(resource, int(since))
        if changes is None:
            return [{"type": "ERROR", "object": wire.gone(since)}]
        events = (event_for(change, namespace, matcher) for change in changes)
        return [event for event in events if event is not None]

    def _initial_events_end(self, resource: kmock.resource, info: kmock.ResourceInfo) -> Json:
        return {
            "type": "BOOKMARK",
            "object": {
                "apiVersion": rs.group_version(resource),
                "kind": info.kind,
                "metadata": {
                    "resourceVersion": str(self.store.revision),
                    "annotations": {"k8s.io/initial-events-end": "true"},
                },
            },
        }


def _resource(request: rendering.Request) -> kmock.resource:
    if request.resource is None:
        raise _error(404, "NotFound", "the server could not find the requested resource")
    return request.resource


class ApiServerHandle:
    """A running API server: its URL, the emulator (for assertions) and how to stop it."""

    def __init__(self, url: str, emulator: DevApiServer, runner: aiohttp.web.BaseRunner) -> None:
        self.url = url
        self.emulator = emulator
        self._runner = runner

    async def close(self) -> None:
        """End the watch streams, stop serving, and release the emulator."""
        self.emulator.close_watches()
        await self._runner.cleanup()
        await self.emulator.__aexit__(None, None, None)

    async def __aenter__(self) -> ApiServerHandle:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_apiserver(
    host: str = "127.0.0.1", port: int = 0, *, emulator: DevApiServer | None = None
) -> tuple[str, ApiServerHandle]:
    """Serve an API server on host:port (0: a free port) in the running event loop.

    Not kmock.Server: that one also patches aiohttp's resolver process-wide, which the operator
    and the kubelet (aiohttp clients in the same process) do not need.
    """
    emulator = DevApiServer() if emulator is None else emulator
    await emulator.__aenter__()
    runner = aiohttp.web.ServerRunner(
        aiohttp.web.Server(emulator, access_log=None), shutdown_timeout=2.0
    )
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    url = f"http://{bound_host}:{bound_port}"
    return url, ApiServerHandle(url, emulator, runner)


def write_kubeconfig(
    path: str | os.PathLike[str], url: str, *, namespace: str = "default", token: str = "dummy"
) -> Path:
    """A kubeconfig for the dev cluster; kopf, the kubernetes client and kubectl accept it."""
    name = "devcluster"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}
        ],
        "current-context": name,
    }
    target = Path(path)
    # Atomically: a process starting meanwhile (a pod reading its identity's file) must never
    # read half a file.
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    partial.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(partial, target)
    return target
