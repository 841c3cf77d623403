"""Cross-field rules of a pool's spec, each declared once for both of its enforcers.

The API server enforces them through the CRD's CEL `x-kubernetes-validations`. The models
enforce them too (`LLMServingPoolSpec.model_validate`), because the operator must not act on a
pool that an older CRD, or a server that skipped the rules, let through. Each rule's CEL rule,
CEL message and Python check are written side by side in one factory, and the generic factories
(orderings, owned flags, capacity) derive all three from one declaration; tests/api runs one
table of invalid pools through both enforcers and requires the same message from each.

Messages name the offending field in wire form (`spec.roles.mixed.minReplicas`) because the
operator copies them into the pool's InvalidSpec condition, where no field path is attached.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from chiron_operator.api.base import wire_get, wire_path
from chiron_operator.api.store import StoreType
from chiron_operator.api.vllm import (
    BREAKING_FLAGS,
    GPU_RESOURCE,
    OPERATOR_OWNED_FLAGS,
    OwnedFlag,
)
from chiron_operator.core.enums import Role

Path = tuple[str, ...]
Check = Callable[[object], str | None]

RULE_ERROR_TYPE: Final = "chiron_rule"

_PY_OPS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One cross-field rule at a node of the spec (`node` in wire names, () is the spec).

    `field` is the offending field relative to the node: the CRD's `fieldPath` and the
    pydantic error's loc. `check` returns the violation message, or None when the rule holds;
    it is the Python twin of `rule`/`message_expression`.
    """

    name: str
    node: Path
    field: Path
    rule: str
    message: str
    message_expression: str
    check: Check
    reason: str = "FieldValueInvalid"

    @property
    def path(self) -> str:
        """The offending field's full wire path, e.g. `spec.roles.mixed.minReplicas`."""
        return wire_path(("spec", *self.node, *self.field))

    def to_validation(self) -> dict[str, str]:
        """The rule as a CRD `x-kubernetes-validations` entry."""
        entry = {"rule": self.rule, "message": self.message}
        if self.message_expression:
            entry["messageExpression"] = self.message_expression
        entry["fieldPath"] = "".join(f".{part}" for part in self.field)
        entry["reason"] = self.reason
        return entry


def _lit(text: str) -> str:
    """A CEL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ref(path: Path) -> str:
    return ".".join(("self", *path))


def compare(
    node: Path, left: Path, op: str, right: Path, *, factor: float | None = None, why: str = ""
) -> Rule:
    """`left op factor * right`, blaming `left`; paths are relative to `node`."""
    left_path = wire_path(("spec", *node, *left))
    right_path = wire_path(("spec", *node, *right))
    scaled = f"{factor:g} * {right_path}" if factor is not None else right_path
    suffix = f": {why}" if why else ""
    bound = f"{float(factor)!r} * {_ref(right)}" if factor is not None else _ref(right)

    def check(model: object) -> str | None:
        left_value = wire_get(model, left)
        right_value = wire_get(model, right)
        limit = right_value * factor if factor is not None else right_value
        if _PY_OPS[op](left_value, limit):
            return None
        return f"{left_path} ({left_value}) must be {op} {scaled} ({right_value}){suffix}"

    parts = (
        _lit(f"{left_path} ("),
        f"string({_ref(left)})",
        _lit(f") must be {op} {scaled} ("),
        f"string({_ref(right)})",
        _lit(f"){suffix}"),
    )
    return Rule(
        name=f"{left_path} {op} {scaled}",
        node=node,
        field=left,
        rule=f"{_ref(left)} {op} {bound}",
        message=f"{left_path} must be {op} {scaled}{suffix}",
        message_expression=" + ".join(parts),
        check=check,
    )


def servable(
    node: Path, prefix: Path, roles: tuple[Role, Role], traffic: str, *, when: str = ""
) -> Rule:
    """Some role able to serve `traffic` may run: the two roles' maxReplicas sum to >= 1.

    `prefix` leads from `node` to the roles; with `when`, the rule applies only while that
    optional field of the node is set.
    """
    fields = [(*prefix, role.value, "maxReplicas") for role in roles]
    paths = [wire_path(("spec", *node, *f)) for f in fields]
    condition = f" when {wire_path(('spec', *node, when))} is set" if when else ""
    message = (
        f"{paths[0]} + {paths[1]} must be >= 1{condition}: {traffic} requests are served by "
        f"{roles[0].value} and {roles[1].value} instances"
    )
    # Either count >= 1, not their sum: the counts are non-negative, and a sum can overflow.
    total = " || ".join(f"{_ref(f)} >= 1" for f in fields)

    def check(model: object) -> str | None:
        if when and wire_get(model, (when,)) is None:
            return None
        return None if sum(wire_get(model, f) for f in fields) >= 1 else message

    return Rule(
        name=f"{traffic} traffic servable",
        node=node,
        field=fields[0],
        rule=f"!has(self.{when}) || {total}" if when else total,
        message=message,
        message_expression="",
        check=check,
    )


def owned_flag(flag: OwnedFlag) -> Rule:
    """`spec.template.args` must not set a flag the operator owns or one that breaks the pool."""
    path = wire_path(("spec", "template", "args"))
    head = f"{path} must not set {flag.flag}"
    tail = f": {flag.why}"
    match = " || ".join(f"a == {_lit(s)} || a.startsWith({_lit(f'{s}=')})" for s in flag.spellings)

    def check(model: object) -> str | None:
        args: tuple[str, ...] = wire_get(model, ("args",))
        found = next((arg for arg in args if flag.matches(arg)), None)
        return None if found is None else f"{head} (found {found}){tail}"

    return Rule(
        name=f"{path} without {flag.flag}",
        node=("template",),
        field=("args",),
        rule=f"!self.args.exists(a, {match})",
        message=f"{head}{tail}",
        message_expression=(
            f"{_lit(f'{head} (found ')} + self.args.filter(a, {match})[0] + {_lit(f'){tail}')}"
        ),
        check=check,
        reason="FieldValueForbidden",
    )


def gpus_match_tensor_parallel() -> Rule:
    """`tensorParallelSize` equals the nvidia.com/gpu limit when that limit is set."""
    tp_path = wire_path(("spec", "template", "tensorParallelSize"))
    limit_path = wire_path(("spec", "template", "resources", "limits", GPU_RESOURCE))
    limit = f"self.resources.limits[{_lit(GPU_RESOURCE)}]"
    why = ": vLLM runs one tensor-parallel rank per GPU"

    def check(model: object) -> str | None:
        limits: dict[str, str] = wire_get(model, ("resources", "limits"))
        size = wire_get(model, ("tensorParallelSize",))
        gpus = limits.get(GPU_RESOURCE)
        if gpus is None or gpus == str(size):
            return None
        return f"{tp_path} ({size}) must equal {limit_path} ({gpus}){why}"

    parts = (
        _lit(f"{tp_path} ("),
        "string(self.tensorParallelSize)",
        _lit(f") must equal {limit_path} ("),
        f"string({limit})",
        _lit(f"){why}"),
    )
    return Rule(
        name=f"{tp_path} == {limit_path}",
        node=("template",),
        field=("tensorParallelSize",),
        rule=(
            f"!({_lit(GPU_RESOURCE)} in self.resources.limits) || "
            f"string({limit}) == string(self.tensorParallelSize)"
        ),
        message=f"{tp_path} must equal {limit_path}{why}",
        message_expression=" + ".join(parts),
        check=check,
    )


_GATEWAY: Final[Path] = ("gateway",)


def sqlite_single_replica() -> Rule:
    """An enabled gateway on the SQLite store runs one replica."""
    replicas = wire_path(("spec", *_GATEWAY, "replicas"))
    store_type = wire_path(("spec", *_GATEWAY, "store", "type"))
    head = f"{replicas} must be 1 when {store_type} is {StoreType.SQLITE}"
    why = ": one replica owns the SQLite file; the PostgreSQL store runs several"

    def check(model: object) -> str | None:
        count = wire_get(model, ("replicas",))
        enabled = wire_get(model, ("enabled",))
        if not enabled or wire_get(model, ("store", "type")) != StoreType.SQLITE or count == 1:
            return None
        return f"{replicas} ({count}) must be 1 when {store_type} is {StoreType.SQLITE}{why}"

    parts = (
        _lit(f"{replicas} ("),
        "string(self.replicas)",
        _lit(f") must be 1 when {store_type} is {StoreType.SQLITE}{why}"),
    )
    return Rule(
        name=f"{replicas} == 1 with {StoreType.SQLITE}",
        node=_GATEWAY,
        field=("replicas",),
        rule=f"!self.enabled || self.store.type != {_lit(StoreType.SQLITE)} || self.replicas == 1",
        message=f"{head}{why}",
        message_expression=" + ".join(parts),
        check=check,
    )


def _store_is_postgresql(model: object) -> bool:
    return bool(wire_get(model, ("store", "type")) == StoreType.POSTGRESQL)


def _has_postgresql(model: object) -> bool:
    return wire_get(model, ("store", "postgresql")) is not None


def postgresql_url_required() -> Rule:
    """The PostgreSQL store names the Secret holding its URL (`urlSecretRef` is required inside
    `postgresql`, so `postgresql` being set is enough)."""
    store_type = wire_path(("spec", *_GATEWAY, "store", "type"))
    field: Path = ("store", "postgresql", "urlSecretRef")
    path = wire_path(("spec", *_GATEWAY, *field))
    message = (
        f"{path} must be set when {store_type} is {StoreType.POSTGRESQL}: "
        "the Secret holds the database's URL"
    )

    def check(model: object) -> str | None:
        broken = _store_is_postgresql(model) and not _has_postgresql(model)
        return message if broken else None

    return Rule(
        name=f"{path} with {StoreType.POSTGRESQL}",
        node=_GATEWAY,
        field=field,
        rule=f"self.store.type != {_lit(StoreType.POSTGRESQL)} || has(self.store.postgresql)",
        message=message,
        message_expression="",
        check=check,
        reason="FieldValueRequired",
    )


def postgresql_only_when_chosen() -> Rule:
    """`store.postgresql` without type PostgreSQL is refused: whoever set it expects the
    database, and must not silently get a SQLite file instead."""
    store_type = wire_path(("spec", *_GATEWAY, "store", "type"))
    field: Path = ("store", "postgresql")
    path = wire_path(("spec", *_GATEWAY, *field))
    message = (
        f"{path} must not be set unless {store_type} is {StoreType.POSTGRESQL}: "
        "the gateway would ignore it and keep its batches in SQLite"
    )

    def check(model: object) -> str | None:
        broken = _has_postgresql(model) and not _store_is_postgresql(model)
        return message if broken else None

    return Rule(
        name=f"{path} only with {StoreType.POSTGRESQL}",
        node=_GATEWAY,
        field=field,
        rule=f"self.store.type == {_lit(StoreType.POSTGRESQL)} || !has(self.store.postgresql)",
        message=message,
        message_expression="",
        check=check,
        reason="FieldValueForbidden",
    )


def _role_rules() -> list[Rule]:
    rules = []
    for role in Role:
        name = role.value
        rules += [
            compare(("roles",), (name, "minReplicas"), "<=", (name, "maxReplicas")),
            compare(("roles",), (name, "minBatchSizeSeqs"), "<=", (name, "initialBatchSizeSeqs")),
            compare(("roles",), (name, "initialBatchSizeSeqs"), "<=", (name, "maxBatchSizeSeqs")),
        ]
    return rules


RULES: Final[tuple[Rule, ...]] = (
    *_role_rules(),
    servable(("roles",), (), (Role.INTERACTIVE, Role.MIXED), "interactive"),
    servable((), ("roles",), (Role.BATCH, Role.MIXED), "batch", when="batchQueue"),
    *(owned_flag(flag) for flag in (*OPERATOR_OWNED_FLAGS, *BREAKING_FLAGS)),
    gpus_match_tensor_parallel(),
    sqlite_single_replica(),
    postgresql_url_required(),
    postgresql_only_when_chosen(),
    compare(
        ("prometheus",),
        ("windowS",),
        ">=",
        ("scrapeIntervalS",),
        factor=2.0,
        why="a rate over the window needs at least two scrapes",
    ),
    compare(
        (),
        ("tuning", "guards", "metricsStalenessS"),
        ">",
        ("prometheus", "scrapeIntervalS"),
        why="otherwise every sample reads as stale and the pool never scales",
    ),
    compare(
        ("tuning",),
        ("global", "ibpLowRatio"),
        "<",
        ("global", "ibpHighRatio"),
        why="the instance count holds while backpressure is between them",
    ),
    compare(
        ("tuning",),
        ("restart", "urgentDwellS"),
        "<=",
        ("restart", "dwellS"),
        why="a decrease forced by an ITL breach must not wait longer than an ordinary change",
    ),
)


def rules_at(node: Path) -> tuple[Rule, ...]:
    """The rules that sit at one node of the spec."""
    return tuple(rule for rule in RULES if rule.node == node)


def enforce(model: object, node: Path) -> None:
    """Raise a pydantic ValidationError listing every rule at `node` that `model` breaks.

    Called from the node's model validator, so pydantic prefixes each error's loc with the
    node's own location and the operator sees one error per broken rule, at the blamed field.
    """
    errors = [
        InitErrorDetails(
            type=PydanticCustomError(RULE_ERROR_TYPE, "{message}", {"message": message}),
            loc=rule.field,
            input=model,
        )
        for rule in rules_at(node)
        if (message := rule.check(model)) is not None
    ]
    if errors:
        raise ValidationError.from_exception_data(type(model).__name__, errors)
