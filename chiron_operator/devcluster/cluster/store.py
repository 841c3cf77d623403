"""The API server's object store: writes with kube-apiserver's semantics, and the change log.

It keeps objects in kmock's `ObjectsArray` (so `emulator.objects[...]` assertions see every
version) and adds what kmock lacks: a cluster-wide resourceVersion, server-owned metadata,
the status and scale subresources, graceful pod deletion, finalizers, garbage collection
through ownerReferences, and a bounded change log that watches replay from a resourceVersion.

Every method is synchronous: the server calls them between awaits, so each write is atomic
with respect to every other request, and a watch registered in the same step as its snapshot
cannot miss a change.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kmock

from chiron_operator.devcluster.cluster import objects as ob
from chiron_operator.devcluster.cluster import resources as rs
from chiron_operator.devcluster.cluster.objects import WriteError
from chiron_operator.devcluster.cluster.patching import apply_patch

Json = dict[str, Any]
Key = tuple[kmock.resource, str | None, str]


@dataclass(frozen=True, slots=True)
class Change:
    """One stored change, as watchers receive it (`old` is the previous version, if any)."""

    revision: int
    resource: kmock.resource
    namespace: str | None
    type: str
    obj: Json
    old: Json | None


@dataclass(frozen=True, slots=True)
class Write:
    """A write to one stored object (or its status or scale subresource)."""

    key: Key
    info: kmock.ResourceInfo
    subresource: str | None
    body: object
    content_type: str | None = None  # None: a replacement (PUT), else a PATCH of this type


class Store:
    """Objects, their resourceVersions, and who watches them."""

    def __init__(
        self,
        objects: kmock.ObjectsArray,
        resources: kmock.ResourcesArray,
        *,
        history_limit: int,
        change_limit: int,
        namespaces: tuple[str, ...] = rs.INITIAL_NAMESPACES,
    ) -> None:
        self.objects = objects
        self.resources = resources
        self.custom = rs.declare(resources)
        self.revision = 0
        self.horizon = 0  # the newest revision no longer in the change log
        self._history_limit = history_limit
        self._change_limit = change_limit
        self._changes: collections.deque[Change] = collections.deque()
        self._watchers: dict[kmock.resource, set[asyncio.Queue[Change | None]]] = (
            collections.defaultdict(set)
        )
        # The keys of every object ever stored, by resource and namespace (in creation order),
        # so that a LIST scans the objects it may return rather than the whole cluster.
        self._index: dict[kmock.resource, dict[str | None, dict[Key, None]]] = (
            collections.defaultdict(lambda: collections.defaultdict(dict))
        )
        for name in dict.fromkeys(namespaces):
            self.create(rs.NAMESPACES, None, {"metadata": {"name": name}})

    # Reads.

    def info(self, resource: kmock.resource) -> kmock.ResourceInfo:
        """What the server knows of a resource; 404 when it does not serve it."""
        if resource not in self.resources:
            raise WriteError(404, "NotFound", "the server could not find the requested resource")
        return self.resources[resource]

    def live(self, key: Key) -> Json | None:
        """The stored object, or None when it does not exist (or was deleted)."""
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    def require(self, key: Key) -> Json:
        """The stored object; 404 when it does not exist."""
        found = self.live(key)
        if found is None:
            raise WriteError(404, "NotFound", f'{key[0].plural} "{key[2]}" not found')
        return found

    def items(self, resource: kmock.resource, namespace: str | None) -> Iterator[Json]:
        """The live objects of a resource, in one namespace or (None) all of them."""
        by_namespace = self._index.get(resource, {})
        scopes = (
            list(by_namespace.values()) if namespace is None else [by_namespace.get(namespace, {})]
        )
        for keys in scopes:
            for key in list(keys):
                entry = self.objects[key]
                if not entry.deleted:
                    yield entry.raw

    # Writes.

    def create(
        self, resource: kmock.resource, namespace: str | None, body: Mapping[str, Any]
    ) -> Json:
        """Store a new object (its name may be generated); 409 when the name is taken."""
        info = self.info(resource)
        if namespace is not None and self.live((rs.NAMESPACES, None, namespace)) is None:
            raise WriteError(404, "NotFound", f'namespaces "{namespace}" not found')
        metadata = ob.metadata_of(body)
        name = str(metadata.get("name") or self._generate(resource, namespace, metadata))
        key = (resource, namespace, name)
        if self.live(key) is not None:
            raise WriteError(409, "AlreadyExists", f'{resource.plural} "{name}" already exists')
        self.revision += 1
        obj = ob.created(
            body,
            api_version=rs.group_version(resource),
            kind=info.kind or str(resource.plural).capitalize(),
            name=name,
            namespace=namespace,
            resource_version=self.revision,
            status_subresource="status" in info.subresources,
        )
        if resource == rs.CRDS:
            obj["status"] = ob.crd_status()
            self.custom |= rs.declare_crd(self.resources, obj)
        if resource == rs.NAMESPACES:
            obj["status"] = {"phase": "Active"}
        self._store(key, obj, None, "ADDED")
        owners = ob.owner_uids(obj)
        if owners and not owners & self._live_uids():
            # The garbage collector deletes a dependent whose owners are all gone, e.g. a pod
            # a controller created for a Deployment deleted a moment before.
            return self.delete(key, {})
        return obj

    def _generate(self, resource: kmock.resource, namespace: str | None, metadata: Json) -> str:
        prefix = metadata.get("generateName")
        if not prefix:
            raise WriteError(422, "Invalid", "metadata.name: Required value: name or generateName")
        while self.live((resource, namespace, name := f"{prefix}{ob.random_suffix()}")):
            continue
        return name

    def write(self, write: Write) -> Json:
        """Apply a PATCH (or a PUT) to an object or to its status or scale subresource."""
        old = self.require(write.key)
        subresource = write.subresource
        if subresource is not None and subresource not in write.info.subresources & {
            "status",
            "scale",
        }:
            raise WriteError(404, "NotFound", f"subresource {subresource!r} is not served")
        base = ob.scale_of(old) if subresource == "scale" else old
        wanted = self._wanted(write, base)
        ob.check_precondition(base, wanted)
        if subresource == "scale":
            wanted, subresource = ob.scaled(old, wanted), None
        new = ob.updated(
            old,
            wanted,
            subresource=subresource,
            status_subresource="status" in write.info.subresources,
            resource_version=self.revision + 1,
        )
        if _same(new, old):
            return old  # a no-op write changes nothing, not even the resourceVersion
        self.revision += 1
        return self._commit(write.key, new, old)

    def _wanted(self, write: Write, base: Json) -> Json:
        if write.content_type is not None:
            custom = write.key[0] in self.custom
            return apply_patch(base, write.body, write.content_type, custom=custom)
        if not isinstance(write.body, Mapping):
            raise WriteError(400, "BadRequest", "the request body must be a JSON object")
        return dict(write.body)

    def _commit(self, key: Key, new: Json, old: Json) -> Json:
        metadata = ob.metadata_of(new)
        if metadata.get("deletionTimestamp") and not metadata.get("finalizers"):
            return self._remove(key, new, orphan=False)
        if key[0] == rs.CRDS:
            self.custom |= rs.declare_crd(self.resources, new)
        self._store(key, new, old, "MODIFIED")
        return new

    def delete(self, key: Key, options: Mapping[str, Any]) -> Json:
        """Delete an object: at once, or mark it (finalizers; scheduled pods drain first)."""
        old = self.require(key)
        _check_delete_preconditions(old, options)
        grace, metadata = options.get("gracePeriodSeconds"), ob.metadata_of(old)
        if metadata.get("deletionTimestamp"):
            if grace == 0 and not metadata.get("finalizers"):
                return self._remove(key, old, orphan=False)
            return old
        # A pod on a node is only marked: its kubelet stops the containers, then deletes it
        # for good with gracePeriodSeconds=0.
        scheduled = key[0] == rs.PODS and bool((old.get("spec") or {}).get("nodeName"))
        if (scheduled and grace != 0) or metadata.get("finalizers"):
            if grace is None:
                grace = (old.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            self.revision += 1
            new = ob.with_metadata(
                old,
                self.revision,
                deletionTimestamp=ob.timestamp(),
                deletionGracePeriodSeconds=int(grace) if scheduled else 0,
            )
            self._store(key, new, old, "MODIFIED")
            return new
        return self._remove(key, old, orphan=options.get("propagationPolicy") == "Orphan")

    def _remove(self, key: Key, last: Json, *, orphan: bool) -> Json:
        if key[0] == rs.NAMESPACES:
            self._empty_namespace(key[2])
        self.revision += 1
        final = ob.with_metadata(last, self.revision)
        self.objects[key].delete()
        self._publish(Change(self.revision, key[0], key[1], "DELETED", final, last))
        if not orphan:
            self._collect_dependents(str(ob.metadata_of(last).get("uid")))
        return final

    def _collect_dependents(self, uid: str) -> None:
        """Background cascading deletion: dependents whose every owner is gone are deleted."""
        alive = self._live_uids()
        for key, entry in list(self.objects.items()):
            if entry.deleted:
                continue
            owners = ob.owner_uids(entry.raw)
            if uid in owners and not owners & alive:
                self.delete(key, {})

    def _live_uids(self) -> set[str]:
        return {
            str(ob.metadata_of(entry.raw).get("uid"))
            for entry in self.objects.values()
            if not entry.deleted
        }

    def _empty_namespace(self, namespace: str) -> None:
        """Delete every object in a namespace that is being deleted."""
        for key, entry in list(self.objects.items()):
            if key[1] == namespace and not entry.deleted:
                self.delete(key, {})

    def _store(self, key: Key, new: Json, old: Json | None, event: str) -> None:
        if key in self.objects:
            history = self.objects[key].history
            history.append(new)
            if len(history) > self._history_limit:
                del history[: len(history) - self._history_limit]
        else:
            self.objects[key] = new
            self._index[key[0]][key[1]][key] = None
        self._publish(Change(self.revision, key[0], key[1], event, new, old))

    # Watching.

    def _publish(self, change: Change) -> None:
        if len(self._changes) >= self._change_limit:
            self.horizon = self._changes.popleft().revision
        self._changes.append(change)
        for queue in self._watchers[change.resource]:
            queue.put_nowait(change)

    def subscribe(self, resource: kmock.resource) -> asyncio.Queue[Change | None]:
        """A queue of every later change of a resource; None in it ends the watch."""
        queue: asyncio.Queue[Change | None] = asyncio.Queue()
        self._watchers[resource].add(queue)
        return queue

    def unsubscribe(self, resource: kmock.resource, queue: asyncio.Queue[Change | None]) -> None:
        """Stop feeding a watch's queue."""
        self._watchers[resource].discard(queue)

    def changes_since(self, resource: kmock.resource, revision: int) -> list[Change] | None:
        """The changes of a resource after `revision`; None when the log no longer has them."""
        if revision < self.horizon:
            return None
        return [c for c in self._changes if c.revision > revision and c.resource == resource]

    def close_watches(self) -> None:
        """End every open watch."""
        for queues in self._watchers.values():
            for queue in queues:
                queue.put_nowait(None)


def _check_delete_preconditions(old: Json, options: Mapping[str, Any]) -> None:
    preconditions = options.get("preconditions") or {}
    metadata = ob.metadata_of(old)
    for field in ("uid", "resourceVersion"):
        wanted = preconditions.get(field)
        if wanted is not None and str(wanted) != str(metadata.get(field)):
            raise WriteError(409, "Conflict", f"precondition failed: {field} does not match")


def _same(new: Json, old: Json) -> bool:
    def strip(obj: Json) -> Json:
        metadata = {k: v for k, v in ob.metadata_of(obj).items() if k != "resourceVersion"}
        return {**obj, "metadata": metadata}

    return strip(new) == strip(old)


async def next_changes(
    queue: asyncio.Queue[Change | None], timeout: float | None
) -> AsyncIterator[Change]:
    """The changes a watch queue receives, until it is closed or `timeout` passes."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        try:
            # Not wait_for: on Python 3.11 it can swallow the cancellation of a server shutdown.
            async with asyncio.timeout_at(deadline):
                change = await queue.get()
        except TimeoutError:
            return
        if change is None:
            return
        yield change


def event_for(
    change: Change, namespace: str | None, matcher: Callable[[Mapping[str, Any]], bool]
) -> Json | None:
    """The event a watcher with this filter sees: an object entering the selection is ADDED
    for it and one leaving is DELETED, as with the real server's filtered watches."""
    if namespace is not None and change.namespace != namespace:
        return None
    if change.type == "DELETED":
        return {"type": "DELETED", "object": change.obj} if matcher(change.obj) else None
    was = change.old is not None and matcher(change.old)
    now = matcher(change.obj)
    kind = ("MODIFIED" if was else "ADDED") if now else ("DELETED" if was else None)
    return None if kind is None else {"type": kind, "object": change.obj}
