"""An operator killed mid-rollout keeps the restart budget: the stamps ride on the Deployment.

The mixed role wants a bigger batch on every tick (full pods, ITL far below the SLO), so the
slow path restarts it as often as the budget allows: `minIntervalS` 20 s, at most 2 restarts
per hour. Every restart's status write is lost, as when the operator is killed between
patching the Deployment and patching the pool's status. The ticks run the operator's own steps
(`outcome.evaluate`, `tick.apply_outcome`, `objects.patch_status`) against the dev cluster's API
server (kmock); the pods and their Prometheus signals are the only parts made up here (kmock
runs no pods).

Before the stamps, the restart log lived only in status: restarts came at ticks 2, 5 and 25
instead of 2 and 22 (issue 14). The second test removes the stamps by hand after each restart
and shows that failure again, here with a dwell of 1 s: a restart every other tick.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from chiron_operator.api import parse_spec
from chiron_operator.api.status import DecisionField
from chiron_operator.devcluster.cluster.apiserver import ApiServerHandle
from chiron_operator.kube import KubeClient, applied_max_num_seqs
from chiron_operator.kube.labels import ANNOTATION_MAX_NUM_SEQS, LABEL_POOL, LABEL_ROLE
from chiron_operator.metrics import PoolMetrics
from chiron_operator.operator import objects
from chiron_operator.operator.handlers import pool_ref
from chiron_operator.operator.outcome import TickInputs, evaluate, previous_status
from chiron_operator.operator.tick import apply_outcome
from tests.devcluster.conftest import apiserver, kube, kubeconfig
from tests.operator.harness import MERGE, fixed
from tests.operator.inprocess import NAMESPACE, InProcessPool, small_spec
from tests.operator.ticks import busy

__all__ = ["apiserver", "kube", "kubeconfig"]
POOL = "rolling"
Json = dict[str, Any]
GROWING = {
    "minReplicas": 1,
    "maxReplicas": 1,
    "minBatchSizeSeqs": 4,
    "maxBatchSizeSeqs": 4096,
    "initialBatchSizeSeqs": 4,
}
BUDGET = {"restart": {"dwellS": 1, "urgentDwellS": 1, "minIntervalS": 20, "maxRestartsPerHour": 2}}
# Past tick 42, where a third restart would come if the hourly budget did not hold.
TICKS = 45


def _running_pods(deployments: list[Json]) -> list[Json]:
    """Ready pods for every replica, at their Deployment's --max-num-seqs (the kubelet's part)."""
    pods = []
    for deployment in deployments:
        labels = deployment["metadata"].get("labels") or {}
        seqs = applied_max_num_seqs(deployment) or 0
        for index in range(int(deployment["spec"]["replicas"])):
            name = f"{deployment['metadata']['name']}-{index}"
            pods.append(
                {
                    "metadata": {
                        "name": name,
                        "labels": {LABEL_POOL: labels[LABEL_POOL], LABEL_ROLE: labels[LABEL_ROLE]},
                        "annotations": {ANNOTATION_MAX_NUM_SEQS: str(seqs)},
                    },
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                }
            )
    return pods


async def _tick(
    pool: InProcessPool, *, crash_on_restart: bool, field: DecisionField = DecisionField.BATCH_SIZE
) -> bool:
    """One tick; whether it changed `field` of a role (a restart, by default). Then, with
    `crash_on_restart`, the status write is lost (the operator died after the Deployment
    patch)."""
    pool.now_s += 1.0
    body = await pool.body()
    ref = pool_ref(body)
    spec = parse_spec(body["spec"])
    read = await asyncio.to_thread(objects.read_cluster, pool.kube, ref)
    pods = _running_pods(read.deployments)
    seqs = {
        p["metadata"]["name"]: int(p["metadata"]["annotations"][ANNOTATION_MAX_NUM_SEQS])
        for p in pods
    }
    metrics = PoolMetrics(pods={name: busy(n) for name, n in seqs.items()}, fetched_at_s=pool.now_s)
    generation = int(body["metadata"]["generation"])
    inputs = TickInputs(
        spec,
        spec.to_tuning(),
        replace(read, pods=pods),
        metrics,
        previous_status(body),
        pool.now_s,
        generation,
        ref,
    )
    outcome, problem = await apply_outcome(pool.ctx, ref, inputs, evaluate(inputs))
    assert problem is None
    restarted = outcome.the_plan.acts and any(c.field is field for c in outcome.the_plan.changes)
    if not (restarted and crash_on_restart):
        wire = outcome.status.model_dump(mode="json", by_alias=True)
        await asyncio.to_thread(objects.patch_status, pool.kube, ref, wire)
    return restarted


async def _created(apiserver: ApiServerHandle, kube: KubeClient, **override: Any) -> InProcessPool:
    pool = InProcessPool(kube, apiserver, POOL)
    spec = {"roles": {"interactive": fixed(1, 1), "mixed": GROWING}, "tuning": BUDGET, **override}
    await pool.create(small_spec(**spec))
    body = await pool.body()
    spec = parse_spec(body["spec"])
    await asyncio.to_thread(
        objects.ensure_objects, kube, pool_ref(body), spec, spec.to_tuning(), []
    )
    return pool


async def test_a_crash_mid_rollout_keeps_min_interval_and_the_hourly_budget(
    apiserver: ApiServerHandle, kube: KubeClient
) -> None:
    pool = await _created(apiserver, kube)
    restarts = [t for t in range(1, TICKS + 1) if await _tick(pool, crash_on_restart=True)]
    assert restarts == [2, 22], "20 s apart, then the hour's budget of 2 is spent"
    mixed = await pool.deployment("mixed")
    stamps = mixed["metadata"]["annotations"]["chiron.io/restarts-unix-s"].split(",")
    assert [float(s) - pool.now_s + TICKS for s in stamps] == [2.0, 22.0]
    # Every restart's status write was lost: only the Deployment remembered them.
    state = ((await pool.body())["status"]["controllerState"]["restart"]).get("mixed") or {}
    assert len(state.get("restart_times_s") or []) == 2
    held = [d for d in await pool.decisions() if d["role"] == "mixed" and d["field"] == "batchSize"]
    assert held[-1]["reason"] == "RestartBudgetExhausted"


async def test_without_the_stamps_a_crash_resets_the_budget(
    apiserver: ApiServerHandle, kube: KubeClient
) -> None:
    """The finding, reproduced: the stamps removed from the Deployment after each restart
    (what an operator without them left), every restart's status write lost."""
    pool = await _created(apiserver, kube)
    restarts = []
    for t in range(1, 26):
        if await _tick(pool, crash_on_restart=True):
            restarts.append(t)
            await pool.call(
                "PATCH",
                f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{POOL}-mixed",
                body={"metadata": {"annotations": {"chiron.io/restarts-unix-s": None}}},
                content_type=MERGE,
            )
    # Each lost status write forgot the restart before it: one every dwell, 20 s apart never.
    assert restarts == list(range(2, 26, 2))


async def test_a_crash_after_a_scale_up_keeps_the_cooldown(
    apiserver: ApiServerHandle, kube: KubeClient
) -> None:
    """One replica per tick at most, a 30 s scale-up cooldown, every scale-up's status lost."""
    pool = await _created(
        apiserver,
        kube,
        roles={"interactive": fixed(1, 1), "mixed": fixed(1, 3)},
        tuning={"guards": {"maxScaleUpStepReplicas": 1, "scaleUpCooldownS": 30}},
    )
    scaled = [
        t
        for t in range(1, 36)
        if await _tick(pool, crash_on_restart=True, field=DecisionField.REPLICAS)
    ]
    assert scaled == [1, 31]
    assert (await pool.deployment("mixed"))["spec"]["replicas"] == 3
