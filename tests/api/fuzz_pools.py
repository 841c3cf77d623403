"""Seeded mutations of the example pools, and the API server's verdict on each.

A mutation sets a field of the spec (any leaf of the CRD's schema, present or not) to an
extreme or ill-typed value, deletes one, renames the pool, or adds engine args, labels,
resources or environment variables. `admit` does what the API server does with the result:
defaulting, the structural schema, the CEL rules, and the JSON round trip of storage (Go
writes an integral float64 as an integer), so the operator reads what a real cluster stores.
"""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

import celpy
from celpy import celtypes

from chiron_operator.api.crd import openapi_schema
from tests.api.crd_support import apply_defaults, cel_failures, evaluate, schema_errors
from tests.api.pools import EXAMPLE_NAMES, load_example

Json = dict[str, Any]
Path = tuple[str, ...]

NUMBERS: Final = (
    0,
    -1,
    1,
    2,
    0.0001,
    5e-324,
    1e-9,
    0.5,
    3.0,
    7.5,
    1e305,
    1.7976931348623157e308,
    2**63 - 1,
    2**64,
    2**53,
    2**31,
    10**6,
    86400 * 365,
)
ILL_TYPED: Final = ("5", "yes", "true", "on", True, False, None, "", [], {})
STRINGS: Final = (
    "",
    "UPPER",
    "with space",
    "dot.ted",
    "-lead",
    "trail-",
    "ok-name",
    "é",
    "a/b",
    "a" * 64,
    "b" * 300,
)
ENGINE_ARGS: Final = (
    ("--host", "127.0.0.1"),
    ("--host=::1",),
    ("--port", "9000"),
    ("--disable-log-stats",),
    ("--served-model-name", "other"),
    ("--served_model_name=other",),
    ("--pipeline-parallel-size", "2"),
    ("-pp", "2"),
    ("--data-parallel-size", "2"),
    ("-dp=2",),
    ("--tensor-parallel-size", "8"),
    ("--max-num-seqs=4",),
    ("--scheduling-policy", "fcfs"),
    ("--shutdown-timeout", "5"),
    ("--uds", "/tmp/vllm.sock"),
    ("--model", "other"),
    ("--max-model-len", "4096"),
    ("--enable-prefix-caching",),
    ("--gpu-memory-utilization=0.8",),
)
MAP_FIELDS: Final[tuple[Path, ...]] = (
    ("template", "labels"),
    ("template", "annotations"),
    ("template", "nodeSelector"),
    ("template", "resources", "requests"),
    ("template", "resources", "limits"),
    ("gateway", "resources", "requests"),
    ("gateway", "resources", "limits"),
)
MAP_KEYS: Final = ("app", "team.io/owner", "nvidia.com/gpu", "cpu", "memory", "gpu", "Bad Key")
MAP_VALUES: Final = ("1", "500m", "16Gi", "1e3", "-1", "0.5", "yes", "a" * 70, "x y", "", 4)


@dataclass(frozen=True)
class Verdict:
    """What the API server did with one pool: the stored object, or the fields it blamed."""

    stored: Json | None
    blamed: tuple[tuple[str, str], ...]


@cache
def root_schema() -> Json:
    """The whole object's openAPIV3Schema, as the models generate it now."""
    return openapi_schema()


def leaf_paths(schema: Json, path: Path = ()) -> list[Path]:
    """Every scalar field of the spec reached through named properties."""
    properties = schema.get("properties")
    if not properties:
        return [path] if schema.get("type") != "object" else []
    found = []
    for name, sub in properties.items():
        found += leaf_paths(sub, (*path, name))
    return found


@cache
def spec_leaves() -> tuple[Path, ...]:
    """The spec's scalar fields."""
    return tuple(leaf_paths(root_schema()["properties"]["spec"]))


def examples() -> list[Json]:
    """The example pools, as users apply them."""
    return [load_example(name) for name in EXAMPLE_NAMES]


def _number(rng: random.Random) -> Any:
    if rng.random() < 0.5:
        return rng.choice(NUMBERS)
    magnitude = 10 ** rng.uniform(-6, 12)
    value = rng.choice((magnitude, round(magnitude), -magnitude))
    return value if rng.random() < 0.8 else float(value)


def _value(rng: random.Random) -> Any:
    draw = rng.random()
    if draw < 0.6:
        return _number(rng)
    if draw < 0.8:
        return rng.choice(ILL_TYPED)
    return rng.choice(STRINGS)


def _node(spec: Json, path: Path) -> Json:
    node = spec
    for name in path:
        child = node.get(name)
        if not isinstance(child, dict):
            child = {}
            node[name] = child
        node = child
    return node


def _set_leaf(pool: Json, rng: random.Random) -> None:
    *parents, leaf = rng.choice(spec_leaves())
    _node(pool["spec"], tuple(parents))[leaf] = _value(rng)


def _delete_leaf(pool: Json, rng: random.Random) -> None:
    *parents, leaf = rng.choice(spec_leaves())
    _node(pool["spec"], tuple(parents)).pop(leaf, None)


def _rename(pool: Json, rng: random.Random) -> None:
    length = rng.choice((1, 20, 50, 51, 52, 57, 63, 64, 80))
    stem = rng.choice(("p", "pool-", "Pool", "9pool", "pool.a", "pool_a"))
    pool["metadata"]["name"] = (stem * length)[:length]


def _engine_args(pool: Json, rng: random.Random) -> None:
    template = _node(pool["spec"], ("template",))
    args = template.get("args")
    args = args if isinstance(args, list) else []
    template["args"] = args + list(rng.choice(ENGINE_ARGS))


def _map_entry(pool: Json, rng: random.Random) -> None:
    node = _node(pool["spec"], rng.choice(MAP_FIELDS))
    node[rng.choice(MAP_KEYS)] = rng.choice(MAP_VALUES)


def _env(pool: Json, rng: random.Random) -> None:
    template = _node(pool["spec"], ("template",))
    name = rng.choice(("OK_NAME", "1BAD", "has space", "a=b", "dot.ted", ""))
    env = template.get("env")
    env = env if isinstance(env, list) else []
    template["env"] = [*env, {"name": name, "value": "v"}]


MUTATIONS: Final[tuple[tuple[float, Callable[[Json, random.Random], None]], ...]] = (
    (0.55, _set_leaf),
    (0.1, _delete_leaf),
    (0.1, _rename),
    (0.1, _engine_args),
    (0.1, _map_entry),
    (0.05, _env),
)


def mutate(pool: Json, rng: random.Random) -> Json:
    """A copy of `pool` with one to three random mutations."""
    out = copy.deepcopy(pool)
    for _ in range(rng.choice((1, 1, 2, 3))):
        weights = [weight for weight, _ in MUTATIONS]
        mutation = rng.choices([m for _, m in MUTATIONS], weights)[0]
        mutation(out, rng)
    return out


def _go_json(value: Any) -> Any:
    """A value after the API server stored it and handed it back (Go's encoding/json)."""
    if isinstance(value, dict):
        return {key: _go_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_go_json(item) for item in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        # float64 is written without a fraction below 1e21, and read back as an integer.
        return int(value) if abs(value) < 1e21 else value
    return value


def _name_problems(name: object) -> list[tuple[str, str]]:
    # Any custom resource's name is a DNS-1123 subdomain (the API server's own check).
    ok = isinstance(name, str) and 0 < len(name) <= 253
    ok = ok and all(part and part[0].isalnum() for part in str(name).split("."))
    ok = ok and str(name) == str(name).lower() and "_" not in str(name)
    return [] if ok else [("metadata.name", f"invalid name {name!r}")]


def root_failures(stored: Json, schema: Json) -> list[tuple[str, str]]:
    """The root's rules: the server gives them `self.metadata.name` (and generateName)."""
    meta = {celtypes.StringType("name"): celtypes.StringType(stored["metadata"]["name"])}
    self_value = celtypes.MapType({celtypes.StringType("metadata"): celtypes.MapType(meta)})
    found = []
    for rule in schema.get("x-kubernetes-validations", []):
        if not evaluate(rule["rule"], self_value):
            found.append((rule.get("fieldPath", "").lstrip(".") or "<root>", rule["message"]))
    return found


def cel_verdict(stored: Json, schema: Json) -> list[tuple[str, str]]:
    """The rules that fail; a rule whose evaluation fails (an overflow) blames no field."""
    spec_schema = schema["properties"]["spec"]
    try:
        found = root_failures(stored, schema)
        return found + [(f.path, f.message) for f in cel_failures(stored["spec"], spec_schema)]
    except (ValueError, celpy.CELEvalError) as error:
        return [("", f"CEL evaluation error: {error}")]


def admit(pool: Json) -> Verdict:
    """The API server's verdict: defaulting, schema, CEL rules, then storage."""
    schema = root_schema()
    blamed = _name_problems(pool.get("metadata", {}).get("name"))
    defaulted = apply_defaults(json.loads(json.dumps(pool)), schema)
    blamed += schema_errors(defaulted, schema, root="")
    if not blamed:
        stored = _go_json(defaulted)
        blamed += cel_verdict(stored, schema)
    if blamed:
        return Verdict(None, tuple(blamed))
    return Verdict(_go_json(defaulted), ())
