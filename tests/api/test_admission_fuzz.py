"""Every pool the API server admits runs; every pool it refuses is refused naming the field.

Seeded mutations of deploy/examples (`fuzz_pools`): numbers pushed to extremes (tiny, huge,
negative, zero, float for int), ill-typed values, deleted fields, long or malformed names,
engine args, labels, resources. Each goes through the CRD as the API server applies it
(defaulting, schema, CEL, storage); an admitted one must pass the models, build objects that
Kubernetes' own validation accepts, and run pure ticks on missing and extreme metrics with
finite numbers in status (`pure_run`). A refused one must be refused at a named field.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, Final

import pytest
from pydantic import ValidationError

from chiron_operator.api import LLMServingPool, check_spec, names
from chiron_operator.api.bounds import spec_structural
from chiron_operator.api.spec import LLMServingPoolSpec
from chiron_operator.kube import labels
from tests.api.crd_support import apply_defaults, schema_errors, walk
from tests.api.fuzz_pools import admit, examples, mutate
from tests.api.pools import edited, minimal_spec
from tests.api.pure_run import run_pool

CASES: Final = 2000
SEED: Final = 14
# Map keys (labels, annotations, nodeSelector, resource names) only the models check
# (`api/keys.py`: no structural schema constrains keys, and a CEL regex over them exceeds the
# API server's cost budget): such a pool is admitted and then held with InvalidSpec naming
# the key, instead of running.
KEY_REFUSAL: Final = "bad key: "


def _names_a_field(path: str, message: str) -> bool:
    return path.startswith(("spec.", "metadata.")) or message.startswith(("spec.", "metadata."))


def _fuzz() -> Counter[str]:
    rng = random.Random(SEED)
    pools = examples()
    seen: Counter[str] = Counter()
    for index in range(CASES):
        pool = mutate(rng.choice(pools), rng)
        verdict = admit(pool)
        if verdict.stored is None:
            seen["rejected"] += 1
            unnamed = [b for b in verdict.blamed if not _names_a_field(*b)]
            assert not unnamed, f"case {index}: refused without naming a field: {unnamed}"
            continue
        seen["admitted"] += 1
        _, errors = check_spec(verdict.stored["spec"])
        if errors:
            assert all(KEY_REFUSAL in e.message for e in errors), f"case {index}: {errors}"
            seen["held for a map key"] += 1
            continue
        problems = run_pool(verdict.stored, random.Random(index))
        assert not problems, f"case {index}: admitted pool fails: {problems}\n{pool}"
    return seen


def test_admitted_pools_run_and_refused_ones_name_the_field() -> None:
    seen = _fuzz()
    assert seen["admitted"] + seen["rejected"] == CASES
    # Both sides are exercised, so neither assertion above holds vacuously.
    assert seen["admitted"] >= CASES // 20, seen
    assert seen["rejected"] >= CASES // 2, seen


def test_examples_are_admitted_and_run() -> None:
    for pool in examples():
        verdict = admit(pool)
        assert verdict.stored is not None, verdict.blamed
        assert run_pool(verdict.stored, random.Random(0)) == []


def _typed_fields() -> list[tuple[str, str]]:
    schema = spec_structural(LLMServingPoolSpec)
    found = []
    for path, node in walk(schema):
        if node.get("type") in ("boolean", "integer") and "[]" not in path and "{}" not in path:
            found.append((path.lstrip("."), str(node["type"])))
    return found


TYPED_FIELDS: Final = _typed_fields()


def test_every_boolean_and_integer_is_checked() -> None:
    kinds = Counter(kind for _, kind in TYPED_FIELDS)
    assert kinds["boolean"] >= 3 and kinds["integer"] >= 25, kinds


WRONG: Final[dict[str, tuple[Any, ...]]] = {
    "boolean": ("yes", "true", 1, "on"),
    "integer": ("5", 1.5, True, "yes"),
}


@pytest.mark.parametrize(("path", "kind"), TYPED_FIELDS, ids=[p for p, _ in TYPED_FIELDS])
def test_models_and_crd_agree_on_booleans_and_integers(
    path: str, kind: str, spec_schema: dict[str, Any]
) -> None:
    for value in WRONG[kind]:
        spec = edited(minimal_spec(), {path: value})
        wire = f"spec.{path}"
        crd = schema_errors(apply_defaults(spec, spec_schema), spec_schema)
        assert wire in [p for p, _ in crd], (value, crd)
        _, errors = check_spec(spec)
        assert wire in [e.path for e in errors], (value, errors)
        assert all(wire in e.message for e in errors if e.path == wire)


@pytest.mark.parametrize(
    ("name", "valid"),
    [("p" * 51, True), ("llama-8b", True), ("p" * 52, False), ("Llama", False), ("9b", False)],
)
def test_pool_names_fit_every_derived_name(name: str, valid: bool) -> None:
    pool = {"metadata": {"name": name, "namespace": "llm"}, "spec": minimal_spec()}
    verdict = admit(pool)
    assert (verdict.stored is not None) == valid, verdict.blamed
    assert all("metadata.name" in path + message for path, message in verdict.blamed)
    if valid:
        LLMServingPool.model_validate(pool)
    else:
        with pytest.raises(ValidationError, match=r"metadata\.name must be a DNS-1035 label"):
            LLMServingPool.model_validate(pool)


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"template.labels": {"Bad Key": "x"}}, "spec.template.labels[Bad Key]"),
        ({"template.annotations": {"-x": "y"}}, "spec.template.annotations[-x]"),
        ({"template.nodeSelector": {"UPPER.io/x": "y"}}, "spec.template.nodeSelector[UPPER.io/x]"),
        ({"template.resources": {"limits": {"gpu": 1}}}, "spec.template.resources.limits.gpu"),
        ({"gateway.resources": {"requests": {"a b": "1"}}}, "spec.gateway.resources.requests[a b]"),
    ],
)
def test_models_hold_pools_with_bad_map_keys(changes: dict[str, Any], path: str) -> None:
    _, errors = check_spec(edited(minimal_spec(), changes))
    assert [e.path for e in errors] == [path]
    assert errors[0].message.startswith(f"{path}: {KEY_REFUSAL}")


def test_models_accept_good_map_keys() -> None:
    changes = {
        "template.labels": {"app.kubernetes.io/part-of": "chat", "team": "a_b-c.d"},
        "template.resources": {"limits": {"nvidia.com/gpu": 1, "hugepages-2Mi": "1Gi"}},
    }
    assert check_spec(edited(minimal_spec(), changes))[1] == []


def test_the_name_limit_is_the_object_builders() -> None:
    # kube.labels refuses to build objects for longer names; admission must refuse them first.
    assert names.MAX_POOL_NAME == labels.MAX_POOL_NAME
