"""Validate a raw spec into errors that name the field, for the pool's InvalidSpec condition.

The operator reads specs as plain dicts from the API server. A spec the CRD accepted can still
be invalid here (a CRD older than the operator, or a server that skipped the CEL rules), and the
operator must then hold the pool and say which field is wrong rather than crash or guess.
"""

from __future__ import annotations

from typing import NamedTuple

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from chiron_operator.api.base import wire_path
from chiron_operator.api.rules import RULE_ERROR_TYPE
from chiron_operator.api.spec import LLMServingPoolSpec


class SpecError(NamedTuple):
    """One violation: the field's wire path (`spec.roles.mixed.minReplicas`) and a message
    that names it too (conditions carry only the message)."""

    path: str
    message: str


class InvalidSpecError(ValueError):
    """A spec that does not validate; `errors` lists every violation found."""

    def __init__(self, errors: list[SpecError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


def _spec_error(error: ErrorDetails, root: str) -> SpecError:
    loc = list(error["loc"])
    about_key = bool(loc) and loc[-1] == "[key]"
    if about_key:
        loc.pop()
    path = wire_path((root, *loc))
    if error["type"] == RULE_ERROR_TYPE:
        return SpecError(path, error["msg"])
    if error["type"] == "extra_forbidden":
        return SpecError(path, f"{path}: unknown field")
    detail = f"key {error['msg']}" if about_key else error["msg"]
    return SpecError(path, f"{path}: {detail}")


def spec_errors(error: ValidationError, root: str = "spec") -> list[SpecError]:
    """A pydantic error on a spec as SpecErrors, one per violation, in pydantic's order."""
    return [_spec_error(detail, root) for detail in error.errors(include_url=False)]


def parse_spec(raw: object) -> LLMServingPoolSpec:
    """The spec of a pool from its raw wire form; raises InvalidSpecError listing every error.

    Violations inside a section that fails its own checks hide the cross-section rules that
    read it (those run on a fully parsed spec only), so fixing errors can surface new ones.
    """
    try:
        return LLMServingPoolSpec.model_validate(raw)
    except ValidationError as error:
        raise InvalidSpecError(spec_errors(error)) from error


def validate_spec(raw: object) -> list[SpecError]:
    """Every violation in a raw spec (empty when valid), each naming its field."""
    return check_spec(raw)[1]


def check_spec(raw: object) -> tuple[LLMServingPoolSpec | None, list[SpecError]]:
    """One parse of a raw spec: the spec and no errors, or no spec and every violation."""
    try:
        return parse_spec(raw), []
    except InvalidSpecError as invalid:
        return None, invalid.errors
