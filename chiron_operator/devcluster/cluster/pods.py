"""The Pod objects the dev cluster's kubelet creates and the status it reports for them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from chiron_operator.devcluster.cluster.objects import metadata_of, timestamp
from chiron_operator.devcluster.cluster.processes import PodProcess
from chiron_operator.devcluster.cluster.rollout import HASH_LABEL

NODE_NAME: Final = "devcluster"
PORT_ANNOTATION: Final = "devcluster.chiron.io/port"

Json = dict[str, Any]


def pod_body(deployment: Json, name: str, template_hash: str, port: int) -> Json:
    """A pod of a Deployment's template, bound to the node, with its local port recorded."""
    metadata = metadata_of(deployment)
    template = (deployment.get("spec") or {}).get("template") or {}
    template_meta = template.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": metadata.get("namespace"),
            "labels": {**(template_meta.get("labels") or {}), HASH_LABEL: template_hash},
            "annotations": {**(template_meta.get("annotations") or {}), PORT_ANNOTATION: str(port)},
            "ownerReferences": [owner_reference(deployment)],
        },
        "spec": {**(template.get("spec") or {}), "nodeName": NODE_NAME},
    }


def owner_uids(obj: Mapping[str, Any]) -> set[str]:
    return {str(ref.get("uid")) for ref in metadata_of(obj).get("ownerReferences") or []}


def owner_reference(deployment: Json) -> Json:
    metadata = metadata_of(deployment)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_status(pod: Json, process: PodProcess) -> Json:
    previous = pod.get("status") or {}
    ready = "True" if process.ready else "False"
    conditions = {"PodScheduled": "True", "Initialized": "True"}
    conditions.update(ContainersReady=ready, Ready=ready)
    before = {c.get("type"): c for c in previous.get("conditions") or []}
    now = timestamp()
    container = ((pod.get("spec") or {}).get("containers") or [{}])[0]
    state = {"running": {"startedAt": now}} if process.started else {"waiting": {}}
    return {
        "phase": "Running" if process.started else "Pending",
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": previous.get("startTime", now),
        "conditions": [
            {
                "type": kind,
                "status": status,
                "lastTransitionTime": before[kind].get("lastTransitionTime")
                if before.get(kind, {}).get("status") == status
                else now,
            }
            for kind, status in conditions.items()
        ],
        "containerStatuses": [
            {
                "name": container.get("name", "main"),
                "image": container.get("image", ""),
                "imageID": "",
                "containerID": f"devcluster://{process.pid or 0}",
                "ready": process.ready,
                "started": process.started,
                "restartCount": process.restarts,
                "state": state,
            }
        ],
    }


def status_summary(status: Mapping[str, Any]) -> tuple[object, ...]:
    containers = status.get("containerStatuses") or [{}]
    return (
        status.get("phase"),
        containers[0].get("ready"),
        containers[0].get("started"),
        containers[0].get("restartCount"),
    )
