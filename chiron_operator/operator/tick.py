"""One control tick of one pool: gather -> decide -> apply -> report.

The handlers stay thin: they call `run_tick` at the pool's cadence. Every blocking call runs in
a worker thread so one slow pool (a Prometheus timing out) never stalls the others; Prometheus
fetches run on their own bounded executor (`fetching.FetchLimiter`).
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
)
from chiron_operator.api.status import upsert_condition
from chiron_operator.core.enums import Role
from chiron_operator.core.state import bookings_of
from chiron_operator.core.tuning import PoolTuning
from chiron_operator.kube import EventType, KubeApiError
from chiron_operator.metrics import PoolMetrics, PoolQuery
from chiron_operator.operator import objects as cluster
from chiron_operator.operator.context import OperatorContext, PoolRef
from chiron_operator.operator.events import announce
from chiron_operator.operator.failures import TickProblem
from chiron_operator.operator.gateway_objects import missing_gateway
from chiron_operator.operator.metrics_log import log_fetch_errors
from chiron_operator.operator.outcome import (
    TickInputs,
    TickOutcome,
    evaluate,
    previous_status,
    write_problem,
)
from chiron_operator.operator.pod_policy import admitted_spec
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
    # The operator's pod policy (allowed images and ServiceAccounts) is part of the verdict.
    spec, errors = admitted_spec(body.get("spec") or {}, ctx.pod_policy)
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


class TokenNotAllowedError(SecretUnreadableError):
    """The pool names no token Secret, and its URL may not receive the operator's own token."""


def _operator_token(ctx: OperatorContext, url: str) -> str | None:
    """The operator's token for `url`; refused, not dropped, where the admin did not allow it.

    Sending the query without it would only trade a clear cause for a 401, or read an
    unauthenticated endpoint the pool's author may not have meant.
    """
    settings = ctx.prometheus
    if settings.token is None:
        return None
    token = settings.token_for(url)
    if token is None:
        raise TokenNotAllowedError(
            f"the operator's Prometheus token goes only to the URLs its admin allows "
            f"(--prometheus-token-url), not to {url}: set spec.prometheus.authSecretRef to a "
            "Secret holding a token for it"
        )
    return token


async def _token(ctx: OperatorContext, ref: PoolRef, spec: LLMServingPoolSpec) -> str | None:
    secret = spec.prometheus.auth_secret_ref
    if secret is None:
        return _operator_token(ctx, spec.prometheus.url)
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
    query = PoolQuery.from_spec(
        ref.namespace, ref.name, spec, allow_promql=ctx.prometheus.allow_pool_promql
    )
    return await ctx.fetches.run(
        ref.namespace,
        ref.name,
        functools.partial(source.fetch, query),
        deadline_s=ctx.prometheus.deadline_s,
        now_s=ctx.clock(),
    )


async def run_tick(
    ctx: OperatorContext, ref: PoolRef, body: Mapping[str, Any]
) -> TickProblem | None:
    """Gather, decide, apply (Enforce only), report.

    A Deployment write the API server refused is reported (status, decision record, Event)
    and returned, not raised: the next tick retries it. Anything else that fails raises.
    """
    started = time.perf_counter()
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    spec = await checked_spec(ctx, ref, body, generation)
    if spec is None:
        return None
    tuning = spec.to_tuning()
    state = await _read_complete(ctx, ref, spec, tuning)
    metrics = await _fetch_metrics(ctx, ref, spec)
    log_fetch_errors(ctx.fetch_errors, (ref.namespace, ref.name), metrics)
    previous = previous_status(body)
    inputs = TickInputs(spec, tuning, state, metrics, previous, ctx.clock(), generation, ref)
    outcome, failure = await apply_outcome(ctx, ref, inputs, evaluate(inputs))
    wire = outcome.status.model_dump(mode="json", by_alias=True)
    await asyncio.to_thread(cluster.patch_status, ctx.kube, ref, wire)
    await announce(ctx, ref, outcome.report, previous, outcome.status)
    elapsed_s = time.perf_counter() - started
    publish(ctx.telemetry, ref, outcome.report, metrics.queries, elapsed_s)
    return failure


async def apply_outcome(
    ctx: OperatorContext, ref: PoolRef, inputs: TickInputs, outcome: TickOutcome
) -> tuple[TickOutcome, TickProblem | None]:
    """Apply an acting plan; after a refused write, the outcome of what was applied, and why.

    The status still has to be written then: otherwise the controller memory of the last
    good tick is kept, and the changes written before the failure would be unrecorded. Each
    change carries its role's restart and resize stamps (`kube.bookings`) in the same patch.
    """
    if outcome.adopted:
        await asyncio.to_thread(cluster.adopt_scale_downs, ctx.kube, ref, outcome.adopted)
    if not outcome.the_plan.acts:
        return outcome, None
    booked = {role: bookings_of(outcome.report.state, role) for role in Role}
    applying = cluster.Applying(booked)
    try:
        await asyncio.to_thread(
            cluster.apply_plan,
            ctx.kube,
            ref,
            inputs.spec,
            outcome.the_plan,
            snapshot=outcome.snapshot,
            pods=inputs.cluster.pods,
            applying=applying,
        )
    except KubeApiError:
        done = applying.applied
        return evaluate(inputs, done, applying.errors), write_problem(applying.errors)
    if applying.errors:
        # Refused, yet found on the Deployment: applied, and the refusal still reported.
        return evaluate(inputs, None, applying.errors), write_problem(applying.errors)
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
        cluster.ensure_objects,
        ctx.kube,
        ref,
        spec,
        tuning,
        state.deployments,
        gateway=ctx.gateway,
        security=ctx.pod_policy.vllm,
    )
    try:
        await asyncio.to_thread(ensure)
    except KubeApiError as exc:
        if roles_missing:
            raise
        log.warning("%s/%s: re-creating the gateway failed: %s", ref.namespace, ref.name, exc)
        return state
    return await asyncio.to_thread(cluster.read_cluster, ctx.kube, ref)
