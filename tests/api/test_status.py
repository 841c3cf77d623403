"""The status models: camelCase wire form the CRD accepts, summaries, condition bookkeeping."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from chiron_operator.api import (
    Condition,
    ConditionStatus,
    ConditionType,
    DecisionController,
    DecisionField,
    DecisionRecord,
    GatewayStatus,
    MetricNames,
    PoolStatus,
    Recommendations,
    RoleRecommendation,
    RoleStatus,
    RoleStatuses,
    SignalsStatus,
    batch_size_summary,
    finite_or_none,
    replicas_summary,
    slack_ratio,
    slo_slack_ratio,
    upsert_condition,
)
from chiron_operator.api.status import SLACK_FLOOR_RATIO
from chiron_operator.core.enums import Reason, Role
from tests.api.crd_support import schema_errors

T0 = datetime(2025, 1, 8, 12, 0, tzinfo=UTC)


def _condition(kind: ConditionType, status: ConditionStatus, at: datetime) -> Condition:
    return Condition(
        type=kind, status=status, reason="MetricsMissing", message="", last_transition_time=at
    )


def _status() -> PoolStatus:
    roles = RoleStatuses(
        interactive=RoleStatus(
            desired_replicas=2, current_replicas=2, ready_replicas=2, batch_size_seqs=32
        ),
        mixed=RoleStatus(desired_replicas=2, current_replicas=1, ready_replicas=1),
    )
    signals = SignalsStatus(
        interactive_backpressure_ratio=0.9,
        ttft_s=1.5,
        ttft_slack_ratio=0.25,
        itl_slack_ratio=-0.1,
        queued_batch_requests=120,
        metrics_age_s=4.0,
        metric_names=MetricNames.V1,
    )
    decision = DecisionRecord(
        time=T0,
        controller=DecisionController.GLOBAL,
        role=Role.MIXED,
        field=DecisionField.REPLICAS,
        from_value=1,
        to_value=2,
        reason=Reason.INTERACTIVE_BACKPRESSURE_HIGH,
        message="IBP 0.90 above 0.80",
        applied=True,
    )
    return PoolStatus(
        observed_generation=3,
        replicas_summary=replicas_summary(roles),
        batch_size_summary=batch_size_summary(roles),
        slo_slack_ratio=slo_slack_ratio(signals),
        last_reason=decision.reason,
        roles=roles,
        gateway=GatewayStatus(endpoint="http://chat.llm.svc:80", replicas=2, ready_replicas=1),
        signals=signals,
        conditions=(_condition(ConditionType.READY, ConditionStatus.TRUE, T0),),
        decisions=(decision,),
        recommendations=Recommendations(mixed=RoleRecommendation(replicas=2, batch_size_seqs=64)),
        controller_state={"local": {"mixed": {"ewma_itl_s": 0.04}}},
    )


def test_status_is_camel_case_on_the_wire() -> None:
    wire = _status().model_dump(mode="json", by_alias=True)
    assert wire["observedGeneration"] == 3
    assert wire["replicasSummary"] == "I:2/2 M:1/2 B:0/0"
    assert wire["batchSizeSummary"] == "32/-/-"
    assert wire["sloSlackRatio"] == -0.1
    assert wire["roles"]["interactive"]["batchSizeSeqs"] == 32
    assert wire["signals"]["interactiveBackpressureRatio"] == 0.9
    assert wire["signals"]["metricNames"] == "v1"
    assert wire["conditions"][0]["lastTransitionTime"] == "2025-01-08T12:00:00Z"
    assert {"from", "to", "controller", "field"} <= set(wire["decisions"][0])
    assert wire["decisions"][0]["reason"] == "InteractiveBackpressureHigh"
    assert wire["recommendations"]["mixed"] == {"replicas": 2, "batchSizeSeqs": 64}
    assert wire["controllerState"] == {"local": {"mixed": {"ewma_itl_s": 0.04}}}
    assert wire["gateway"] == {
        "endpoint": "http://chat.llm.svc:80",
        "replicas": 2,
        "readyReplicas": 1,
    }
    # No gateway is null on the wire, so the status merge patch removes an old one.
    assert PoolStatus().model_dump(mode="json", by_alias=True)["gateway"] is None


def test_status_round_trips_and_the_crd_accepts_it(status_schema: dict[str, Any]) -> None:
    status = _status()
    wire = status.model_dump(mode="json", by_alias=True)
    assert PoolStatus.model_validate(wire) == status
    assert schema_errors(wire, status_schema, root="status") == []
    empty = PoolStatus().model_dump(mode="json", by_alias=True)
    assert schema_errors(empty, status_schema, root="status") == []


def test_status_reads_what_another_operator_version_wrote() -> None:
    wire = _status().model_dump(mode="json", by_alias=True)
    wire["futureField"] = 1
    wire["signals"]["futureSignalRatio"] = 0.5
    assert PoolStatus.model_validate(wire) == _status()


def test_unknown_signals_are_null_not_zero() -> None:
    assert finite_or_none(math.nan) is None
    assert finite_or_none(math.inf) is None
    assert finite_or_none(None) is None
    assert finite_or_none(0.0) == 0.0
    assert slack_ratio(math.nan, 2.0) is None
    assert slack_ratio(1.5, 2.0) == 0.25
    assert slack_ratio(3.0, 2.0) == -0.5
    assert slo_slack_ratio(SignalsStatus()) is None
    assert slo_slack_ratio(SignalsStatus(itl_slack_ratio=0.3)) == 0.3


def test_summaries_of_an_idle_pool() -> None:
    assert replicas_summary(RoleStatuses()) == "I:0/0 M:0/0 B:0/0"
    assert batch_size_summary(RoleStatuses()) == "-/-/-"


def test_upsert_keeps_the_transition_time_while_the_status_holds() -> None:
    ready = _condition(ConditionType.READY, ConditionStatus.TRUE, T0)
    metrics = _condition(ConditionType.METRICS_AVAILABLE, ConditionStatus.FALSE, T0)
    later = T0 + timedelta(minutes=5)
    same = upsert_condition(
        (ready, metrics), ready.model_copy(update={"last_transition_time": later})
    )
    assert same == (ready, metrics)
    flipped = _condition(ConditionType.READY, ConditionStatus.FALSE, later)
    assert upsert_condition((ready, metrics), flipped) == (flipped, metrics)
    conflict = _condition(ConditionType.CONFLICT, ConditionStatus.TRUE, later)
    assert upsert_condition((ready,), conflict) == (ready, conflict)


def test_condition_shape_follows_kubernetes() -> None:
    huge = Condition(
        type=ConditionType.INVALID_SPEC,
        status=ConditionStatus.TRUE,
        reason="InvalidSpec",
        message="x" * 40000,
        last_transition_time=T0,
    )
    assert len(huge.message) == 32768
    with pytest.raises(ValidationError):
        Condition(type="Ready", status="Maybe", reason="R", last_transition_time=T0)
    with pytest.raises(ValidationError):
        Condition(type="Ready", status="True", reason="not a reason", last_transition_time=T0)
    assert [c.value for c in ConditionType] == [
        "Ready",
        "MetricsAvailable",
        "Scaling",
        "Conflict",
        "InvalidSpec",
        "Reconciled",
        "Schedulable",
    ]


@pytest.mark.parametrize(
    ("observed_s", "target_s", "slack"),
    [
        (0.5, 1.0, 0.5),
        (1.7976931348623157e308, 0.001, SLACK_FLOOR_RATIO),  # overflows to -inf unclamped
        (1e9, 0.001, SLACK_FLOOR_RATIO),
        (math.inf, 1.0, None),
        (math.nan, 1.0, None),
        (0.5, 0.0, None),
    ],
)
def test_slack_ratio_is_finite_or_unknown(
    observed_s: float, target_s: float, slack: float | None
) -> None:
    assert slack_ratio(observed_s, target_s) == slack


def test_status_numbers_are_never_nan_or_infinite() -> None:
    signals = SignalsStatus(ttft_s=math.inf, itl_s=math.nan, kv_cache_usage_ratio=0.5)
    assert (signals.ttft_s, signals.itl_s, signals.kv_cache_usage_ratio) == (None, None, 0.5)
    assert PoolStatus(slo_slack_ratio=-math.inf).slo_slack_ratio is None
