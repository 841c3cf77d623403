"""A failing tick is told once per cause: a condition with a reason, one Event, one traceback.

The pool is ticked in this process against the dev cluster's API server (kmock), whose
reactions answer chosen requests with chosen statuses and bodies, over the operator's own
tick (`handlers.tick_once`): an exception inside the tick, a Deployment write answered 503 or
409, a 200 whose body is a JSON list.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from chiron_operator.devcluster.cluster.apiserver import ApiServerHandle
from chiron_operator.kube import KubeClient
from chiron_operator.operator import tick
from tests.devcluster.conftest import apiserver, kube, kubeconfig
from tests.operator.harness import fixed
from tests.operator.inprocess import NAMESPACE, InProcessPool, small_spec

__all__ = ["apiserver", "kube", "kubeconfig"]
POOL = "fragile"
MIXED = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{POOL}-mixed"


@pytest.fixture
async def pool(apiserver: ApiServerHandle, kube: KubeClient) -> AsyncIterator[InProcessPool]:
    found = InProcessPool(kube, apiserver, POOL)
    await found.create(small_spec(roles={"mixed": fixed(1, 3)}))
    await found.tick()
    reconciled = await found.condition("Reconciled")
    assert (reconciled["status"], reconciled["reason"]) == ("True", "TickSucceeded")
    yield found


async def test_an_exception_in_a_tick_is_a_condition_one_event_and_one_traceback(
    pool: InProcessPool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="chiron_operator.operator.failures")
    failing = iter(range(100))

    def broken(*_: Any, **__: Any) -> Any:
        raise KeyError(f"role {next(failing)}")

    monkeypatch.setattr(tick, "evaluate", broken)
    for _ in range(4):
        await pool.tick()
    failed = await pool.condition("Reconciled")
    assert (failed["status"], failed["reason"]) == ("False", "TickFailed")
    assert failed["message"].startswith("KeyError: 'role ")
    assert "Traceback" not in failed["message"] and "\n" not in failed["message"]
    warnings = await pool.events("TickFailed")
    assert len(warnings) == 1, "one Event per cause, not per tick"
    assert warnings[0]["type"] == "Warning"
    assert warnings[0]["message"].startswith("TickFailed: KeyError: 'role 0'")
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1, "the traceback is logged once per cause"
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 3

    monkeypatch.undo()
    await pool.tick()
    recovered = await pool.condition("Reconciled")
    assert (recovered["status"], recovered["reason"]) == ("True", "TickSucceeded")
    assert len(await pool.events("Reconciled")) == 1
    assert len(await pool.events("TickFailed")) == 1


@pytest.mark.parametrize(
    ("answer", "reason", "error"),
    [
        (503, "ApiServerError", "503"),
        (409, "ApiConflict", "409"),
        ([1, 2], "ApiInvalidResponse", "JSON list"),
    ],
)
async def test_a_refused_deployment_write_shows_in_conditions_events_and_decisions(
    pool: InProcessPool, answer: Any, reason: str, error: str
) -> None:
    # The emulator commits the write, then answers as told: the change landed, so it is
    # recorded as applied, and the refusal is reported all the same.
    pool.answer(f"patch {MIXED}", answer)
    await pool.patch_spec({"roles": {"mixed": {"minReplicas": 2}}})
    await pool.tick()
    failed = await pool.condition("Reconciled")
    assert (failed["status"], failed["reason"]) == ("False", reason)
    assert "writing the mixed Deployment (mixed replicas 1 -> 2)" in failed["message"]
    assert error in failed["message"]
    record = [d for d in await pool.decisions() if d["role"] == "mixed" and d["to"] == 2]
    assert len(record) == 1 and record[0]["applied"] is True
    assert record[0]["message"].startswith("[write failed: ")
    assert "found applied all the same" in record[0]["message"]
    assert (await pool.deployment("mixed"))["spec"]["replicas"] == 2
    warnings = await pool.events("TickFailed")
    assert len(warnings) == 1 and warnings[0]["message"].startswith(f"{reason}: ")
    for _ in range(3):
        await pool.tick()
    assert (await pool.condition("Reconciled"))["status"] == "True"
    assert len(await pool.events("TickFailed")) == 1
    assert len(await pool.events("Reconciled")) == 1


async def test_a_write_that_cannot_be_confirmed_stays_recorded_as_not_applied(
    pool: InProcessPool,
) -> None:
    pool.answer(f"patch {MIXED}", 503)
    pool.answer(f"get {MIXED}", 503)
    await pool.patch_spec({"roles": {"mixed": {"minReplicas": 2}}})
    await pool.tick()
    failed = await pool.condition("Reconciled")
    assert (failed["status"], failed["reason"]) == ("False", "ApiServerError")
    record = [d for d in await pool.decisions() if d["role"] == "mixed" and d["to"] == 2]
    assert len(record) == 1 and record[0]["applied"] is False
    assert "not applied, retried next tick" in record[0]["message"]


async def test_a_list_where_an_object_was_expected_fails_every_tick_with_one_event(
    pool: InProcessPool,
) -> None:
    # Reading the pool's Deployments answers 200 with a JSON list, three ticks running.
    listing = f"get /apis/apps/v1/namespaces/{NAMESPACE}/deployments"
    pool.answer(listing, [{"kind": "Deployment"}], times=3)
    for _ in range(3):
        await pool.tick()
    failed = await pool.condition("Reconciled")
    assert (failed["status"], failed["reason"]) == ("False", "ApiInvalidResponse")
    assert "answered 200 with a JSON list where an object was expected" in failed["message"]
    assert len(await pool.events("TickFailed")) == 1
    await pool.tick()
    assert (await pool.condition("Reconciled"))["status"] == "True"
