"""Wire conventions shared by every API model: names, configs and field paths.

The spec is strict (an unknown field is a typo, and a typo in an autoscaler's bounds is an
outage) and frozen (a parsed spec is a value the operator passes around, never edits). The
status is lenient on read: an operator upgrade or rollback must still read what the other
version wrote, and the API server prunes unknown status fields anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

GROUP: Final = "chiron.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "LLMServingPool"
LIST_KIND: Final = "LLMServingPoolList"
PLURAL: Final = "llmservingpools"
SINGULAR: Final = "llmservingpool"
SHORT_NAMES: Final = ("lsp",)
CATEGORIES: Final = ("chiron",)
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

SPEC_CONFIG = ConfigDict(
    alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
)
STATUS_CONFIG = ConfigDict(
    alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
)


class SpecModel(BaseModel):
    """Base of the spec's models: camelCase on the wire, unknown fields rejected, frozen."""

    model_config = SPEC_CONFIG


class StatusModel(BaseModel):
    """Base of the status's models: camelCase on the wire, unknown fields ignored, frozen."""

    model_config = STATUS_CONFIG


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def wire_path(parts: Iterable[str | int]) -> str:
    """A field path the way Kubernetes prints it: `spec.template.env[2].name`,
    `spec.template.resources.limits[nvidia.com/gpu]`."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part}]"
    return text


def wire_get(value: object, path: Iterable[str]) -> Any:
    """Follow wire (camelCase) field names through pydantic models and dataclasses.

    Cross-field rules are declared once in wire names (the CEL side needs them), so the Python
    side resolves the same names instead of repeating each path in snake_case.
    """
    current: Any = value
    for name in path:
        fields = getattr(type(current), "__pydantic_fields__", None)
        if fields is None:
            raise TypeError(f"{type(current).__name__} has no field {name!r}")
        attr = next((a for a, info in fields.items() if name in (info.alias, a)), None)
        if attr is None:
            raise AttributeError(f"{type(current).__name__} has no wire field {name!r}")
        current = getattr(current, attr)
    return current
