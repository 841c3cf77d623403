"""kopf handlers, registered on a registry per operator process (no module globals).

Thin on purpose: object reconciliation on spec events, and one daemon per pool that runs the
control tick at the pool's cadence. All logic lives in tick.py and the packages below it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from chiron_operator.api import GROUP, PLURAL, VERSION
from chiron_operator.api.status import upsert_condition
from chiron_operator.operator import objects as cluster
from chiron_operator.operator.context import OperatorContext, PoolRef
from chiron_operator.operator.events import condition_events, post_events
from chiron_operator.operator.failures import (
    FailureLog,
    TickProblem,
    problem_of,
    reconciled,
    same_cause,
)
from chiron_operator.operator.outcome import previous_status
from chiron_operator.operator.pod_policy import admitted_spec
from chiron_operator.operator.tick import run_tick

log = logging.getLogger(__name__)
DEFAULT_INTERVAL_S = 15.0
ANNOTATION_PREFIX = "chiron.io"
FINALIZER = "chiron.io/kopf-finalizer"


def pool_ref(body: Mapping[str, Any]) -> PoolRef:
    meta = body["metadata"]
    return PoolRef(str(meta["namespace"]), str(meta["name"]), str(meta.get("uid", "")))


def interval_s(body: Mapping[str, Any]) -> float:
    """The pool's control cadence; the default while the spec is invalid."""
    control = (body.get("spec") or {}).get("control") or {}
    value = control.get("intervalS", DEFAULT_INTERVAL_S)
    return float(value) if isinstance(value, int | float) and value > 0 else DEFAULT_INTERVAL_S


def configure(
    settings: kopf.OperatorSettings, mandatory_peering: bool, fixed_namespaces: bool = False
) -> None:
    """kopf settings: progress in annotations (the status schema is ours), quiet Events."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # Our own Events explain decisions; kopf's per-handler ones would drown them.
    settings.posting.level = logging.WARNING
    settings.peering.mandatory = mandatory_peering
    settings.watching.server_timeout = 300
    # Serving a fixed list of namespaces, kopf would still list and watch every Namespace of
    # the cluster (to match glob patterns) and every CRD: cluster-wide reads the namespaced
    # RBAC scope does not grant, answered 403 and logged as warnings. The names are exact, so
    # there is nothing to scan; the CRD is installed before the operator (the chart's crds/).
    settings.scanning.disabled = fixed_namespaces


async def reconcile_objects(ctx: OperatorContext, body: Mapping[str, Any]) -> None:
    """Create or update the pool's Deployments, Services and gateway objects from its spec.

    An invalid spec, or one the operator's pod policy refuses, is left alone here: the pool's
    daemon reports it on its next tick (at once, on creation), and reporting from both places
    would race into duplicate Events.
    """
    ref = pool_ref(body)
    spec, _ = admitted_spec(body.get("spec") or {}, ctx.pod_policy)
    if spec is None:
        return
    tuning = spec.to_tuning()
    async with ctx.lock_for(ref):
        existing = await asyncio.to_thread(ctx.kube.list_deployments, ref.namespace, ref.name)
        touched = await asyncio.to_thread(
            cluster.ensure_objects,
            ctx.kube,
            ref,
            spec,
            tuning,
            existing,
            gateway=ctx.gateway,
            security=ctx.pod_policy.vllm,
        )
    if touched:
        log.info("pool %s/%s: applied %s", ref.namespace, ref.name, ", ".join(touched))


async def control_loop(
    ctx: OperatorContext, body: Mapping[str, Any], stopped: kopf.DaemonStopped
) -> None:
    """Tick until the pool is deleted or the operator stops; a failed tick never ends the loop.

    `body` is kopf's live view of the pool, so spec edits reach the next tick without a
    restart of the daemon.
    """
    ref = pool_ref(body)
    failures = FailureLog(f"{ref.namespace}/{ref.name}")
    loop = asyncio.get_running_loop()
    due = loop.time()
    while not stopped:
        await tick_once(ctx, ref, body, failures)
        # Ticks start every interval, not an interval after the last one ended: otherwise
        # the period stretches by the tick's own duration, and so does the reaction time
        # to load. A tick that overran starts the next one at once, without catching up.
        due = max(due + interval_s(body), loop.time())
        await stopped.wait(max(0.0, due - loop.time()))


async def tick_once(
    ctx: OperatorContext, ref: PoolRef, body: Mapping[str, Any], failures: FailureLog
) -> None:
    """One tick under the pool's lock; a failure is reported, never raised.

    One bad tick (an API hiccup, a bug on one pool's data) must not stop autoscaling: the
    next tick starts from the cluster's state again. Its cause goes to the `Reconciled`
    condition every time it changes, to an Event and the log once per cause.
    """
    try:
        async with ctx.lock_for(ref):
            problem = await run_tick(ctx, ref, body)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        unexpected = problem_of(exc)
        await report_failure(ctx, ref, body, unexpected, announce=failures.failed(unexpected, exc))
        return
    if problem is None:
        failures.succeeded()
    else:
        failures.failed(problem)


async def report_failure(
    ctx: OperatorContext,
    ref: PoolRef,
    body: Mapping[str, Any],
    problem: TickProblem,
    *,
    announce: bool,
) -> None:
    """Write `Reconciled` False with the problem (when it says something new), and post its
    Event when the cause is new both to this process (`announce`) and to the pool's status.

    Best effort: when the API server itself is what fails, this fails too, and the log (once
    per cause) is all that can tell.
    """
    previous = previous_status(body)
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    now = datetime.fromtimestamp(ctx.clock(), UTC)
    done = reconciled(problem, now=now, generation=generation)
    before = next((c for c in previous.conditions if c.type == done.type), None)
    # The same cause with other numbers (a count, a resourceVersion) is not worth a status
    # write on every failing tick: every watcher of the pool would wake for it.
    if before is not None and same_cause(before, done):
        return
    current = previous.model_copy(
        update={"conditions": upsert_condition(previous.conditions, done)}
    )
    wire = [c.model_dump(mode="json", by_alias=True) for c in current.conditions]
    try:
        await asyncio.to_thread(cluster.patch_status, ctx.kube, ref, {"conditions": wire})
        if announce:
            await post_events(ctx, ref, condition_events(previous, current))
    except Exception as exc:  # the tick's own failure is what the log tells
        log.debug("pool %s/%s: reporting the failure failed: %s", ref.namespace, ref.name, exc)


def register(
    registry: kopf.OperatorRegistry,
    ctx: OperatorContext,
    *,
    mandatory_peering: bool,
    fixed_namespaces: bool = False,
) -> None:
    """Register every handler of the operator on `registry`, bound to `ctx`."""

    @kopf.on.startup(registry=registry)
    def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings, mandatory_peering, fixed_namespaces)

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # kopf's own readers look at $KUBECONFIG when called; the kubernetes client library
        # reads it once at import, before --kubeconfig could set it.
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            return kopf.login_with_service_account(**kwargs)
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    async def _reconcile(body: kopf.Body, **_: Any) -> None:
        await reconcile_objects(ctx, body)

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=10.0)
    async def _control(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        await control_loop(ctx, body, stopped)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, optional=True)
    def _forget(body: kopf.Body, **_: Any) -> None:
        # Owned objects go with the pool (ownerReferences); only our own memory is left.
        ctx.forget(pool_ref(body))
