"""One control tick of one pool: gather -> decide -> apply -> report.

The handlers stay thin: they call `run_tick` at the pool's cadence. Every blocking call runs in
a worker thread so one slow pool (a Prometheus timing out) never stalls the others.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from chiron_operator.api import (
    ConditionType,
    LLMServingPoolSpec,
    PoolStatus,
    check_spec,
)
from chiron_operator.api.status import upsert_condition
from chiron_operator.core.tuning import PoolTuning
from chiron_operator.kube import EventType, KubeApiError
from chiron_operator.metrics import PoolMetrics, PoolQuery
from chiron_operator.operator import objects as cluster
from chiron_operator.operator.context import OperatorContext, PoolRef
from chiron_operator.operator.events import announce
from chiron_operator.operator.gateway_objects import missing_gateway
from chiron_operator.operator.metrics_log import log_fetch_errors
from chiron_operator.operator.outcome import TickInputs, TickOutcome, evaluate, previous_status
from chiron_operator.operator.plan import Change
from chiron_operator.operator.status import condition
from chiron_operator.operator.telemetry_update import publish

log = logging.getLogger(__name__)


async def checked_spec(
    ctx: OperatorContext, ref: PoolRef, body: Mapping[str, Any], generation: int
) -> LLMServingPoolSpec | None:
    """The pool's spec, parsed once; None after writing InvalidSpec (naming every field).

    An invalid pool is reported, never retried into a crash loop: nothing is acted on until
    the user fixes the spec, and the next spec change is validated afresh. Status and the
    Warning Event are written when the verdict changes, not on every tick it stays the same:
    a pool left invalid for a day must not rewrite its status (and wake every watcher) each
    interval, nor post the same Event thousands of times.
    """
    spec, errors = check_spec(body.get("spec") or {})
    previous = previous_status(body)
    was_invalid = _condition_message(previous, ConditionType.INVALID_SPEC)
    if not errors and was_invalid is None:
        return spec
    message = "; ".join(e.message for e in errors) or "spec is valid"
    if errors and was_invalid == message and previous.observed_generation == generation:
        return None
    now = datetime.fromtimestamp(ctx.clock(), UTC)
    status = _spec_verdict(previous, message, invalid=bool(errors), now=now, generation=generation)
    await asyncio.to_thread(cluster.patch_status, ctx.kube, ref, status)
    if errors and was_invalid != message:
        await asyncio.to_thread(
            ctx.kube.post_event,
            ref.namespace,
            ref.name,
            ref.uid,
            reason="InvalidSpec",
            message=message,
            event_type=EventType.WARNING,
        )
    return spec


def _spec_verdict(
    previous: PoolStatus, message: str, *, invalid: bool, now: datetime, generation: int
) -> dict[str, Any]:
    """The status patch for a spec verdict: InvalidSpec (and Ready=False while invalid)."""
    verdict = condition(
        ConditionType.INVALID_SPEC,
        invalid,
        "SpecRejected" if invalid else "SpecValid",
        message,
        now=now,
        generation=generation,
    )
    conditions = upsert_condition(previous.conditions, verdict)
    if invalid:
        ready = condition(
            ConditionType.READY, False, "InvalidSpec", message, now=now, generation=generation
        )
        conditions = upsert_condition(conditions, ready)
    status: dict[str, Any] = {
        "conditions": [c.model_dump(mode="json", by_alias=True) for c in conditions]
    }
    if invalid:
        status["observedGeneration"] = generation
    return status


def _condition_message(status: PoolStatus, kind: ConditionType) -> str | None:
    """The message of a True condition of `kind`, or None."""
    for found in status.conditions:
        if found.type == kind.value and found.status == "True":
            return found.message
    return None


class SecretUnreadableError(Exception):
    """The pool's Prometheus token Secret could not be read."""


async def _token(ctx: OperatorContext, ref: PoolRef, spec: LLMServingPoolSpec) -> str | None:
    secret = spec.prometheus.auth_secret_ref
    if secret is None:
        return ctx.prometheus_token
    try:
        token = await asyncio.to_thread(
            cluster.read_secret_key, ctx.kube, ref.namespace, secret.name, secret.key
        )
    except KubeApiError as exc:
        raise SecretUnreadableError(
            f"cannot read Secret {ref.namespace}/{secret.name} (spec.prometheus.authSecretRef): "
            f"{exc.status} {exc.reason}"
        ) from exc
    if token is None:
        raise SecretUnreadableError(
            f"Secret {ref.namespace}/{secret.name} has no key {secret.key!r} "
            "(spec.prometheus.authSecretRef)"
        )
    return token


async def _fetch_metrics(
    ctx: OperatorContext, ref: PoolRef, spec: LLMServingPoolSpec
) -> PoolMetrics:
    """One Prometheus fetch; a token that cannot be read is a metrics failure, not a guess.

    Querying without the token would only trade the real cause for a 401 from Prometheus, or
    worse, read an unauthenticated endpoint the user did not mean.
    """
    try:
        token = await _token(ctx, ref, spec)
    except SecretUnreadableError as exc:
        return PoolMetrics(error=str(exc), fetched_at_s=ctx.clock())
    source = ctx.source_for(ref, spec.prometheus.url, token)
    query = PoolQuery.from_spec(ref.namespace, ref.name, spec)
    return await asyncio.to_thread(source.fetch, query)


async def run_tick(ctx: OperatorContext, ref: PoolRef, body: Mapping[str, Any]) -> None:
    """Gather, decide, apply (Enforce only), report. Raises only on API-server errors."""
    started = time.perf_counter()
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    spec = await checked_spec(ctx, ref, body, generation)
    if spec is None:
        return
    tuning = spec.to_tuning()
    state = await _read_complete(ctx, ref, spec, tuning)
    metrics = await _fetch_metrics(ctx, ref, spec)
    log_fetch_errors(ctx.fetch_errors, (ref.namespace, ref.name), metrics)
    previous = previous_status(body)
    inputs = TickInputs(spec, tuning, state, metrics, previous, ctx.clock(), generation, ref)
    outcome, failure = await _apply(ctx, ref, inputs, evaluate(inputs))
    wire = outcome.status.model_dump(mode="json", by_alias=True)
    await asyncio.to_thread(cluster.patch_status, ctx.kube, ref, wire)
    await announce(ctx, ref, outcome.report, previous, outcome.status)
    elapsed_s = time.perf_counter() - started
    publish(ctx.telemetry, ref, outcome.report, metrics.queries, elapsed_s)
    if failure is not None:
        raise failure


async def _apply(
    ctx: OperatorContext, ref: PoolRef, inputs: TickInputs, outcome: TickOutcome
) -> tuple[TickOutcome, KubeApiError | None]:
    """Apply an acting plan; on a failed write, the outcome of what was applied, and the error.

    The status still has to be written then: otherwise the controller memory of the last
    good tick is kept, and the changes written before the failure would be unrecorded. The
    error is raised after that, so kopf retries the tick.
    """
    if outcome.adopted:
        await asyncio.to_thread(cluster.adopt_scale_downs, ctx.kube, ref, outcome.adopted)
    if not outcome.the_plan.acts:
        return outcome, None
    done: list[Change] = []
    try:
        await asyncio.to_thread(
            cluster.apply_plan,
            ctx.kube,
            ref,
            inputs.spec,
            outcome.the_plan,
            snapshot=outcome.snapshot,
            pods=inputs.cluster.pods,
            applied=done,
        )
    except KubeApiError as exc:
        log.warning(
            "%s/%s: applying the plan failed after %d of %d change(s): %s",
            ref.namespace,
            ref.name,
            len(done),
            len(outcome.the_plan.changes),
            exc,
        )
        return evaluate(inputs, applied=done), exc
    return outcome, None


async def _read_complete(
    ctx: OperatorContext, ref: PoolRef, spec: LLMServingPoolSpec, tuning: PoolTuning
) -> cluster.ClusterState:
    """The pool's objects, creating any role Deployment its spec needs and that is missing.

    A tick racing the create handler, or a Deployment someone deleted, would otherwise be
    planned as a role at zero replicas and "scaled" through a Deployment that is not there.
    A deleted gateway Deployment is re-created the same way (it is the pool's entrypoint), but
    a failure to do so only costs a warning: it must not stop the vLLM pods' autoscaling.
    """
    state = await asyncio.to_thread(cluster.read_cluster, ctx.kube, ref)
    roles_missing = bool(cluster.missing_roles(ref, tuning, state.deployments))
    if not roles_missing and not missing_gateway(ref, spec, state.deployments):
        return state
    ensure = functools.partial(
        cluster.ensure_objects, ctx.kube, ref, spec, tuning, state.deployments, gateway=ctx.gateway
    )
    try:
        await asyncio.to_thread(ensure)
    except KubeApiError as exc:
        if roles_missing:
            raise
        log.warning("%s/%s: re-creating the gateway failed: %s", ref.namespace, ref.name, exc)
        return state
    return await asyncio.to_thread(cluster.read_cluster, ctx.kube, ref)
