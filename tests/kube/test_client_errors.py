"""Malformed answers are API errors with a reason, and the operator's stamps survive a round trip.

Against the dev cluster's API server (kmock), whose reactions answer chosen requests with
chosen bodies.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chiron_operator.core.enums import Role
from chiron_operator.core.state import Bookings
from chiron_operator.devcluster.cluster.apiserver import ApiServerHandle
from chiron_operator.kube import KubeApiError, KubeClient, max_num_seqs_patch, replicas_patch
from chiron_operator.kube.bookings import booking_annotations, read_bookings
from chiron_operator.kube.client import DEPLOYMENTS
from chiron_operator.kube.pods import unschedulable
from tests.kube.support import deployment

NS = "default"
NAME = "llama-70b-mixed"
ONE = f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}"


async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def _created(kube: KubeClient) -> dict[str, Any]:
    body = deployment(Role.MIXED, replicas=1, seqs=64)
    body["metadata"]["namespace"] = NS
    # No owner: the emulator collects objects whose owner does not exist.
    body["metadata"].pop("ownerReferences", None)
    created: dict[str, Any] = await run(kube.create_deployment, body)
    return created


def _answer(server: ApiServerHandle, request: str, payload: object) -> None:
    view = server.emulator[request]
    seen = len(list(view))
    view[seen : seen + 1] << payload


@pytest.mark.parametrize(
    ("payload", "shown"),
    [
        ([1, 2], "a JSON list where an object was expected"),
        (b"<html>busy</html>", "a body that is not JSON"),
    ],
)
async def test_a_success_with_a_malformed_body_is_an_api_error(
    apiserver: ApiServerHandle, kube: KubeClient, payload: object, shown: str
) -> None:
    await _created(kube)
    _answer(apiserver, f"get {ONE}", payload)
    with pytest.raises(KubeApiError) as failed:
        await run(kube.get_deployment, NS, NAME)
    error = failed.value
    assert (error.status, error.reason, error.invalid_response) == (200, "InvalidResponse", True)
    assert f"GET {ONE} answered 200 with {shown}" in error.message
    assert error.outcome_unknown, "a write answered so must be read back"
    # The next call is answered as usual.
    assert (await run(kube.get_deployment, NS, NAME))["metadata"]["name"] == NAME


async def test_a_list_whose_items_are_not_objects_is_an_api_error(
    apiserver: ApiServerHandle, kube: KubeClient
) -> None:
    _answer(apiserver, f"get /apis/apps/v1/namespaces/{NS}/deployments", {"items": [1, "x"]})
    with pytest.raises(KubeApiError) as failed:
        await run(kube.list_deployments, NS, "llama-70b")
    assert failed.value.invalid_response
    assert DEPLOYMENTS in failed.value.message


@pytest.mark.parametrize(("status", "unknown"), [(409, True), (503, True), (403, False)])
async def test_which_refused_writes_may_have_happened(
    apiserver: ApiServerHandle, kube: KubeClient, status: int, unknown: bool
) -> None:
    await _created(kube)
    _answer(apiserver, f"patch {ONE}", status)
    with pytest.raises(KubeApiError) as failed:
        await run(kube.scale_deployment, NS, NAME, 2)
    assert failed.value.status == status
    assert failed.value.outcome_unknown is unknown


async def test_the_stamps_ride_with_the_change_and_read_back(kube: KubeClient) -> None:
    await _created(kube)
    booked = Bookings((1000.5, 1700.25), last_scale_up_s=1650.0, last_scale_down_s=None)
    annotations = booking_annotations(booked)
    scaled = await run(kube.patch_deployment, NS, NAME, replicas_patch(2, annotations))
    assert scaled["spec"]["replicas"] == 2
    assert read_bookings(scaled) == booked
    args = scaled["spec"]["template"]["spec"]["containers"][0]["args"]
    later = Bookings((1000.5, 1700.25, 2000.0), 1650.0, 1900.0)
    patch = max_num_seqs_patch(args, 32, booking_annotations(later))
    restarted = await run(kube.patch_deployment, NS, NAME, patch)
    assert read_bookings(restarted) == later
    template = restarted["spec"]["template"]["metadata"]["annotations"]
    assert template["chiron.io/max-num-seqs"] == "32"
    assert not any(key.endswith("-unix-s") for key in template), "stamps never roll pods"


def test_unreadable_stamps_count_as_absent() -> None:
    broken = {
        "metadata": {
            "annotations": {
                "chiron.io/restarts-unix-s": "12.5,nan,oops,,40",
                "chiron.io/last-scale-up-unix-s": "soon",
            }
        }
    }
    assert read_bookings(broken) == Bookings((12.5, 40.0), None, None)
    assert read_bookings({}) == Bookings()


def test_an_unschedulable_pod_is_found_with_its_time_and_message() -> None:
    pending = {
        "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
                    "lastTransitionTime": "2026-01-01T00:01:00Z",
                }
            ]
        },
    }
    now_s = 1767225660.0 + 30
    assert unschedulable(pending, now_s) == (
        1767225660.0,
        "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
    )
    gated = {
        "status": {
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]
        }
    }
    assert unschedulable(gated, now_s) is None
    assert (
        unschedulable(
            {"status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}, now_s
        )
        is None
    )
    no_time = {
        "status": {
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
        }
    }
    assert unschedulable(no_time, now_s) == (now_s, "")
