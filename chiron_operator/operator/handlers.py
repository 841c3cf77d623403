"""kopf handlers, registered on a registry per operator process (no module globals).

Thin on purpose: object reconciliation on spec events, and one daemon per pool that runs the
control tick at the pool's cadence. All logic lives in tick.py and the packages below it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf

from chiron_operator.api import GROUP, PLURAL, VERSION, check_spec
from chiron_operator.operator import objects as cluster
from chiron_operator.operator.context import OperatorContext, PoolRef
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

    An invalid spec is left alone here: the pool's daemon reports it on its next tick (at
    once, on creation), and reporting from both places would race into duplicate Events.
    """
    ref = pool_ref(body)
    spec, _ = check_spec(body.get("spec") or {})
    if spec is None:
        return
    tuning = spec.to_tuning()
    async with ctx.lock_for(ref):
        existing = await asyncio.to_thread(ctx.kube.list_deployments, ref.namespace, ref.name)
        touched = await asyncio.to_thread(
            cluster.ensure_objects, ctx.kube, ref, spec, tuning, existing, gateway=ctx.gateway
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
    loop = asyncio.get_running_loop()
    due = loop.time()
    while not stopped:
        try:
            async with ctx.lock_for(ref):
                await run_tick(ctx, ref, body)
        except asyncio.CancelledError:
            raise
        except Exception:
            # One bad tick (an API hiccup, a Prometheus timeout) must not stop autoscaling:
            # the next tick starts from the cluster's state again.
            log.exception("pool %s/%s: tick failed", ref.namespace, ref.name)
        # Ticks start every interval, not an interval after the last one ended: otherwise
        # the period stretches by the tick's own duration, and so does the reaction time
        # to load. A tick that overran starts the next one at once, without catching up.
        due = max(due + interval_s(body), loop.time())
        await stopped.wait(max(0.0, due - loop.time()))


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
