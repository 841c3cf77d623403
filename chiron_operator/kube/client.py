"""The operator's I/O to the Kubernetes API, on the official `kubernetes` client.

Synchronous and thread-safe (urllib3's pool): the operator calls it through
`asyncio.to_thread`. Requests go through the client's `ApiClient` (so kubeconfig contexts,
in-cluster service accounts, TLS and token refresh all work as in any kubernetes-client
program), but bodies are sent and returned as plain JSON dicts rather than generated models:
what the builders produce and what the client returns then have one shape, and no field is
lost or renamed in a round trip through the models.

Nothing is configured globally: each client owns its `ApiClient` and `Configuration`, so two
clients for two clusters (or a test's emulator) can live in one process.

Create-or-patch rather than server-side apply: not every API server the operator is tested
against implements apply. The patch is a strategic merge of the whole built object, which sets
every field the operator owns; a key the operator stops writing inside a map (a removed
nodeSelector entry or env var) is not removed from the live object by it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Self

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from chiron_operator.core.enums import Role
from chiron_operator.kube import labels as lb
from chiron_operator.kube.events import EventType, build_event
from chiron_operator.kube.patches import (
    current_deletion_cost,
    pod_deletion_cost_patch,
    replicas_patch,
)

STRATEGIC: Final = "application/strategic-merge-patch+json"
MERGE: Final = "application/merge-patch+json"
DEPLOYMENTS: Final = "/apis/apps/v1/namespaces/{namespace}/deployments"
SERVICES: Final = "/api/v1/namespaces/{namespace}/services"
PODS: Final = "/api/v1/namespaces/{namespace}/pods"
EVENTS: Final = "/api/v1/namespaces/{namespace}/events"
SERVICE_ACCOUNTS: Final = "/api/v1/namespaces/{namespace}/serviceaccounts"
ROLE_BINDINGS: Final = "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"
PERSISTENT_VOLUME_CLAIMS: Final = "/api/v1/namespaces/{namespace}/persistentvolumeclaims"
HPAS: Final = "/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"
SCALED_OBJECTS: Final = "/apis/keda.sh/v1alpha1/namespaces/{namespace}/scaledobjects"

Json = dict[str, Any]


class KubeApiError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server was unreachable)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        """The object (or its resource type) does not exist."""
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """The object exists already, or changed since it was read."""
        return self.status == 409

    @property
    def invalid_response(self) -> bool:
        """The server answered success with a body that is not the JSON object asked for."""
        return self.reason == INVALID_RESPONSE

    @property
    def outcome_unknown(self) -> bool:
        """A write answered so that it may have happened all the same (a conflict, a server
        error after the commit, a timeout): only reading the object back tells."""
        return self.status in {0, 409} or self.status >= 500 or self.invalid_response


INVALID_RESPONSE: Final = "InvalidResponse"


def _loaded(method: str, path: str, status: int, data: bytes | None) -> Json:
    """The JSON object of a successful answer; KubeApiError when it is anything else.

    An API server (or a proxy in front of it) can answer 200 with HTML, or with JSON of another
    shape: that is an API failure with a reason, never a TypeError deep in the tick.
    """
    try:
        loaded = json.loads(data or b"{}")
    except ValueError as exc:
        raise KubeApiError(
            status,
            INVALID_RESPONSE,
            f"{method} {path} answered {status} with a body that is not JSON ({str(exc)[:120]})",
        ) from exc
    if not isinstance(loaded, dict):
        raise KubeApiError(
            status,
            INVALID_RESPONSE,
            f"{method} {path} answered {status} with a JSON {type(loaded).__name__} where an "
            "object was expected",
        )
    return loaded


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except ApiException as exc:
        raise _api_error(exc) from exc
    except HTTPError as exc:
        raise KubeApiError(0, "Unreachable", str(exc)) from exc


def _api_error(exc: ApiException) -> KubeApiError:
    status = int(exc.status or 0)
    message = str(exc.reason or "")
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    if isinstance(body, dict):
        message = str(body.get("message") or message)
        reason = str(body.get("reason") or exc.reason or "")
    else:
        reason = str(exc.reason or "")
    return KubeApiError(status, reason, message)


class KubeClient:
    """Reads and writes the objects of the operator's pools."""

    def __init__(self, api_client: k8s.ApiClient, *, timeout_s: float = 30.0) -> None:
        self._api_client = api_client
        # Every call has a deadline: the operator calls from worker threads, and a call that
        # hangs on a dead connection would hold one of them (and the pool's tick) for ever.
        self._timeout_s = timeout_s

    @classmethod
    def from_kubeconfig(
        cls, path: str | os.PathLike[str] | None = None, context: str | None = None
    ) -> Self:
        """A client for a kubeconfig (None: $KUBECONFIG or ~/.kube/config) and context."""
        # Read $KUBECONFIG now: the kubernetes package reads it once, when it is imported.
        config_file = os.environ.get("KUBECONFIG") if path is None else os.fspath(path)
        api_client = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=config_file, context=context, persist_config=False
        )
        return cls(api_client)

    @classmethod
    def in_cluster(cls) -> Self:
        """A client with the pod's service account."""
        configuration = k8s.Configuration()
        k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
        return cls(k8s.ApiClient(configuration))

    @classmethod
    def from_environment(cls, kubeconfig: str | os.PathLike[str] | None = None) -> Self:
        """In-cluster when running in a pod and no kubeconfig is given, else the kubeconfig."""
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster()
        return cls.from_kubeconfig(kubeconfig)

    @property
    def api_client(self) -> k8s.ApiClient:
        """The underlying client, for calls this class does not wrap (watches)."""
        return self._api_client

    def close(self) -> None:
        """Release the connection pool."""
        self._api_client.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        body: object = None,
        content_type: str | None = None,
    ) -> Json:
        """One API call: `path` may hold `{placeholders}` filled (and quoted) from `params`."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        with _translated():
            serialized = self._api_client.param_serialize(
                method=method,
                resource_path=path,
                path_params=dict(params or {}),
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._api_client.call_api(*serialized, _request_timeout=self._timeout_s)
            response.read()  # type: ignore[no-untyped-call]
            if not 200 <= response.status <= 299:
                raise ApiException.from_response(http_resp=response, body=None, data=None)
        shown = path
        for key, value in (params or {}).items():
            shown = shown.replace(f"{{{key}}}", value)
        return _loaded(method, shown, int(response.status), response.data)

    def _list(self, collection: str, namespace: str, selector: str | None = None) -> list[Json]:
        query = {} if selector is None else {"labelSelector": selector}
        found = self.request("GET", collection, params={"namespace": namespace}, query=query)
        items = found.get("items") or []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise KubeApiError(
                200,
                INVALID_RESPONSE,
                f"GET {collection} answered a list whose items are not objects",
            )
        return items

    def _patch(self, collection: str, namespace: str, name: str, patch: object, kind: str) -> Json:
        params = {"namespace": namespace, "name": name}
        return self.request(
            "PATCH", collection + "/{name}", params=params, body=patch, content_type=kind
        )

    def _create_or_patch(self, collection: str, body: Mapping[str, Any]) -> Json:
        metadata = body["metadata"]
        namespace, name = str(metadata["namespace"]), str(metadata["name"])
        try:
            return self.request("POST", collection, params={"namespace": namespace}, body=body)
        except KubeApiError as exc:
            if not exc.conflict:
                raise
        return self._patch(collection, namespace, name, body, STRATEGIC)

    # Any namespaced object by collection (DEPLOYMENTS, SERVICES, SERVICE_ACCOUNTS...).

    def get_named(self, collection: str, namespace: str, name: str) -> Json | None:
        """The object, or None when it does not exist."""
        params = {"namespace": namespace, "name": name}
        try:
            return self.request("GET", collection + "/{name}", params=params)
        except KubeApiError as exc:
            if exc.not_found:
                return None
            raise

    def create_in(self, collection: str, body: Mapping[str, Any]) -> Json:
        """Create the object; KubeApiError with `conflict` when it exists already."""
        namespace = str(body["metadata"]["namespace"])
        return self.request("POST", collection, params={"namespace": namespace}, body=body)

    def patch_named(
        self, collection: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> Json:
        """Strategic-merge `patch` into a built-in object."""
        return self._patch(collection, namespace, name, patch, STRATEGIC)

    def delete_named(self, collection: str, namespace: str, name: str) -> bool:
        """Delete the object (its dependents go in the background); False when it was absent."""
        params = {"namespace": namespace, "name": name}
        try:
            self.request("DELETE", collection + "/{name}", params=params)
        except KubeApiError as exc:
            if exc.not_found:
                return False
            raise
        return True

    # Deployments and Services.

    def create_deployment(self, body: Mapping[str, Any]) -> Json:
        """Create the Deployment; KubeApiError with `conflict` when it exists already."""
        return self.create_in(DEPLOYMENTS, body)

    def apply_deployment(self, body: Mapping[str, Any]) -> Json:
        """Create the Deployment, or strategic-merge `body` into it when it exists."""
        return self._create_or_patch(DEPLOYMENTS, body)

    def apply_service(self, body: Mapping[str, Any]) -> Json:
        """Create the Service, or strategic-merge `body` into it when it exists."""
        return self._create_or_patch(SERVICES, body)

    def list_services(self, namespace: str, pool_name: str) -> list[Json]:
        """The pool's Services."""
        return self._list(SERVICES, namespace, lb.selector_text(lb.pool_selector(pool_name)))

    def get_deployment(self, namespace: str, name: str) -> Json | None:
        """The Deployment, or None when it does not exist."""
        return self.get_named(DEPLOYMENTS, namespace, name)

    def list_deployments(self, namespace: str, pool_name: str) -> list[Json]:
        """The pool's Deployments (every role that exists)."""
        return self._list(DEPLOYMENTS, namespace, lb.selector_text(lb.pool_selector(pool_name)))

    def patch_deployment(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Json:
        """Strategic-merge `patch` into a Deployment (e.g. `max_num_seqs_patch`)."""
        return self._patch(DEPLOYMENTS, namespace, name, patch, STRATEGIC)

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> Json:
        """Set a Deployment's replicas and the operator's record of them, in one patch."""
        return self.patch_deployment(namespace, name, replicas_patch(replicas))

    # Pods.

    def list_pods(self, namespace: str, pool_name: str, role: Role | None = None) -> list[Json]:
        """The pool's pods, or one role's."""
        labels = lb.pool_selector(pool_name)
        if role is not None:
            labels[lb.LABEL_ROLE] = role.value
        return self._list(PODS, namespace, lb.selector_text(labels))

    def patch_pod_deletion_cost(self, namespace: str, pod: str, cost: int | None) -> Json:
        """Set (None: remove) a pod's `controller.kubernetes.io/pod-deletion-cost`."""
        return self._patch(PODS, namespace, pod, pod_deletion_cost_patch(cost), MERGE)

    def apply_deletion_costs(
        self, namespace: str, pods: Iterable[Mapping[str, Any]], costs: Mapping[str, int]
    ) -> list[str]:
        """Patch the pods whose cost differs from `costs` (0 removes the mark); their names.

        Each patch is an API write and a pod update every watcher sees, so pods that already
        carry the wanted cost are left alone.
        """
        patched = []
        for pod in pods:
            name = str(pod["metadata"]["name"])
            wanted = costs.get(name)
            if wanted is None or wanted == current_deletion_cost(pod):
                continue
            self.patch_pod_deletion_cost(namespace, name, None if wanted == 0 else wanted)
            patched.append(name)
        return patched

    # Other autoscalers.

    def list_hpas(self, namespace: str) -> list[Json]:
        """Every autoscaling/v2 HorizontalPodAutoscaler in the namespace."""
        return self._list(HPAS, namespace)

    def list_scaled_objects(self, namespace: str) -> list[Json]:
        """Every KEDA ScaledObject in the namespace; none when KEDA is not installed."""
        try:
            return self._list(SCALED_OBJECTS, namespace)
        except KubeApiError as exc:
            if exc.not_found:
                return []
            raise

    # Events.

    def post_event(
        self,
        namespace: str,
        pool_name: str,
        pool_uid: str,
        *,
        reason: str,
        message: str,
        event_type: EventType = EventType.NORMAL,
    ) -> Json:
        """Post a core/v1 Event about the pool."""
        body = build_event(
            pool_name,
            namespace,
            pool_uid,
            reason=reason,
            message=message,
            event_type=event_type,
            now=datetime.now(UTC),
        )
        return self.request("POST", EVENTS, params={"namespace": namespace}, body=body)
