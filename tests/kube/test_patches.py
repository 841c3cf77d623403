"""Actuator patches and deletion costs."""

from __future__ import annotations

import pytest

from chiron_operator.devcluster.cluster.patching import STRATEGIC_MERGE_PATCH, apply_patch
from chiron_operator.kube import (
    current_deletion_cost,
    deletion_costs,
    max_num_seqs_patch,
    pod_deletion_cost_patch,
    replicas_patch,
)
from tests.kube.support import container, deployment


def test_replicas_patch_records_what_it_applies() -> None:
    assert replicas_patch(4) == {
        "metadata": {"annotations": {"chiron.io/applied-replicas": "4"}},
        "spec": {"replicas": 4},
    }
    with pytest.raises(ValueError):
        replicas_patch(-1)


def test_max_num_seqs_patch_keeps_the_rest_of_the_container() -> None:
    built = deployment(seqs=64)
    patch = max_num_seqs_patch(container(built)["args"], 128)
    patched = apply_patch(built, patch, STRATEGIC_MERGE_PATCH, custom=False)
    before, after = container(built), container(patched)
    assert after["args"] == [a if a != "64" else "128" for a in before["args"]]
    assert {k: v for k, v in after.items() if k != "args"} == {
        k: v for k, v in before.items() if k != "args"
    }
    assert patched["spec"]["template"]["metadata"]["annotations"]["chiron.io/max-num-seqs"] == "128"
    with pytest.raises(ValueError):
        max_num_seqs_patch(["m"], 0)


def test_pod_deletion_cost_patch() -> None:
    key = "controller.kubernetes.io/pod-deletion-cost"
    assert pod_deletion_cost_patch(-3) == {"metadata": {"annotations": {key: "-3"}}}
    assert pod_deletion_cost_patch(None) == {"metadata": {"annotations": {key: None}}}
    assert current_deletion_cost({"metadata": {"annotations": {key: "-3"}}}) == -3
    assert current_deletion_cost({"metadata": {"annotations": {key: "x"}}}) == 0
    assert current_deletion_cost({"metadata": {}}) == 0


def test_deletion_costs_mark_the_least_loaded_cheapest() -> None:
    loads = {"a": 3.0, "b": 0.0, "c": 1.0, "d": 9.0}
    assert deletion_costs(loads, 2) == {"b": -2, "c": -1, "a": 0, "d": 0}
    assert deletion_costs(loads, 0) == dict.fromkeys(loads, 0)
    assert deletion_costs(loads, 9) == {"b": -4, "c": -3, "a": -2, "d": -1}
    assert deletion_costs({}, 1) == {}


def test_deletion_cost_ties_break_by_name() -> None:
    assert deletion_costs({"y": 1.0, "x": 1.0}, 1) == {"x": -1, "y": 0}
