"""Two operators with kopf peering: only the higher priority acts; the other takes over.

Each operator is its own process with its own identity (bearer token), so the API server's
audit log says which one made every call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chiron_operator.devcluster.cluster.audit import AuditRecord
from chiron_operator.devcluster.cluster.operator_process import OperatorOptions, OperatorProcess
from chiron_operator.devcluster.cluster.stack import DevStack, StackOptions
from tests.operator.harness import Pools, fixed, pool_spec, wait_for, wait_ticks
from tests.operator.rbac_check import chart_grants, denied, namespaced_values

NAMESPACE = "llm"
PEERING = "chiron-operator"
LEADER, STANDBY = "operator-a", "operator-b"
POOL = "shared"


@dataclass
class Pair:
    stack: DevStack
    pools: Pools
    leader: OperatorProcess
    standby: OperatorProcess


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("peering")
    with DevStack(StackOptions(workdir=workdir, namespaces=(NAMESPACE,), pods=False)) as stack:
        stack.create_peering(PEERING, NAMESPACE)
        started: list[OperatorProcess] = []
        try:
            for identity, priority in ((LEADER, 200), (STANDBY, 100)):
                options = OperatorOptions(
                    stack.kubeconfig(identity),
                    namespaces=(NAMESPACE,),
                    peering=PEERING,
                    priority=priority,
                )
                started.append(OperatorProcess(options, Path(workdir) / f"{identity}.log").start())
            yield Pair(stack, Pools(stack.client(), NAMESPACE), *started)
        finally:
            for process in started:
                process.stop()


def _writes(records: list[AuditRecord]) -> list[str]:
    return [f"{r.method} {r.path}" for r in records if r.method not in ("GET", "HEAD")]


def test_only_the_higher_priority_operator_acts_and_the_other_takes_over(pair: Pair) -> None:
    pools, audit = pair.pools, pair.stack.audit
    created_at = time.time()
    assert pair.stack.prometheus is not None
    pools.create(POOL, pool_spec(pair.stack.prometheus.url, roles={"mixed": fixed(1, 4)}))
    wait_for(lambda: len(pools.deployments(POOL)) == 2, timeout_s=10, what="the Deployments")
    pools.patch_spec(POOL, {"roles": {"mixed": {"minReplicas": 2}}})
    wait_for(lambda: pools.replicas(POOL, "mixed") == 2, timeout_s=10, what="the leader's scale-up")
    wait_ticks(audit, NAMESPACE, POOL, LEADER, 3, time.time())

    leader_writes = _writes(audit.by(LEADER, created_at))
    assert any("/deployments" in w for w in leader_writes)
    assert any(w.endswith(f"/llmservingpools/{POOL}/status") for w in leader_writes)
    standby_writes = _writes(audit.by(STANDBY, created_at))
    assert [w for w in standby_writes if "/kopfpeerings/" not in w] == []

    # The leader leaves (gracefully: it withdraws from the peering); the standby resumes.
    pair.leader.stop()
    handover = time.time()
    pools.patch_spec(POOL, {"roles": {"mixed": {"minReplicas": 3}}})
    wait_for(lambda: pools.replicas(POOL, "mixed") == 3, timeout_s=20, what="the standby's act")
    scaled = [
        w for w in _writes(audit.by(STANDBY, handover)) if w.endswith(f"/deployments/{POOL}-mixed")
    ]
    assert scaled == [f"PATCH /apis/apps/v1/namespaces/{NAMESPACE}/deployments/{POOL}-mixed"]
    assert _writes(audit.by(LEADER, handover + 1.0)) == []


def test_api_calls_are_allowed_by_the_chart(pair: Pair) -> None:
    grants = chart_grants(namespaced_values([NAMESPACE]))
    for identity in (LEADER, STANDBY):
        assert denied(pair.stack.audit.by(identity), grants) == []
