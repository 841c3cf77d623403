"""Enumerations shared by every layer: roles, request classes and decision reasons."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """The role of an instance (one Deployment per role in a pool)."""

    INTERACTIVE = "interactive"
    MIXED = "mixed"
    BATCH = "batch"


class RequestClass(StrEnum):
    """The SLO class of a request."""

    INTERACTIVE = "interactive"
    BATCH = "batch"


class Reason(StrEnum):
    """Why a controller produced a value.

    One enum for every controller, so the same reason feeds status conditions, Events, the
    operator's metrics and the simulator's trace. Values are CamelCase like Kubernetes reasons.
    Append new members; never rename one (they are persisted in status and dashboards).
    """

    # Global controller (Chiron): instance counts.
    INTERACTIVE_BACKPRESSURE_HIGH = "InteractiveBackpressureHigh"
    INTERACTIVE_BACKPRESSURE_LOW = "InteractiveBackpressureLow"
    INTERACTIVE_BACKPRESSURE_IN_BAND = "InteractiveBackpressureInBand"
    BATCH_DEADLINES_AT_RISK = "BatchDeadlinesAtRisk"
    BATCH_ABSORBED_BY_MIXED = "BatchAbsorbedByMixed"
    BATCH_DEADLINES_SAFE = "BatchDeadlinesSafe"
    BATCH_QUEUE_EMPTY = "BatchQueueEmpty"
    NO_CHANGE = "NoChange"

    # Local controller (Chiron): batch size.
    BATCH_SIZE_LATENCY_BACKPRESSURE = "BatchSizeLatencyBackpressure"
    BATCH_SIZE_THROUGHPUT_BACKPRESSURE = "BatchSizeThroughputBackpressure"
    BATCH_SIZE_INCREASE = "BatchSizeIncrease"
    BATCH_SIZE_UNSATURATED = "BatchSizeUnsaturated"
    BATCH_SIZE_AT_BOUND = "BatchSizeAtBound"
    # The fast path: the signals still include the size before the last change.
    BATCH_SIZE_SETTLING = "BatchSizeSettling"

    # Restart-aware layer over the slow path (--max-num-seqs restarts pods).
    RESTART_APPLIED = "RestartApplied"
    RESTART_BELOW_HYSTERESIS = "RestartBelowHysteresis"
    RESTART_DWELLING = "RestartDwelling"
    RESTART_MIN_INTERVAL = "RestartMinInterval"
    RESTART_BUDGET_EXHAUSTED = "RestartBudgetExhausted"
    # The fast path: the pool's gateway caps pods at the target, --max-num-seqs is a ceiling.
    BATCH_SIZE_VIA_GATEWAY = "BatchSizeViaGateway"

    # Guard rails, shared by every policy.
    METRICS_MISSING = "MetricsMissing"
    METRICS_STALE = "MetricsStale"
    PENDING_CAPACITY = "PendingCapacity"
    CLAMPED_TO_MIN = "ClampedToMin"
    CLAMPED_TO_MAX = "ClampedToMax"
    MAX_STEP_LIMITED = "MaxStepLimited"
    SCALE_UP_COOLDOWN = "ScaleUpCooldown"
    SCALE_DOWN_STABILIZATION = "ScaleDownStabilization"
    # Pods of the role the scheduler cannot place (no node fits) past the grace period.
    UNSCHEDULABLE = "Unschedulable"

    # Baselines.
    STATIC = "Static"
    TARGET_TRACKING = "TargetTracking"
    WITHIN_TOLERANCE = "WithinTolerance"
    PANIC_MODE = "PanicMode"
    FREENESS_LOW = "FreenessLow"
    FREENESS_HIGH = "FreenessHigh"
    FREENESS_IN_BAND = "FreenessInBand"
