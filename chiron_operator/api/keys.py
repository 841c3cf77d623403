"""Keys of the template's maps, held to Kubernetes' formats by the models.

Labels, annotations and node selectors are keyed by qualified names (`[prefix/]name`), and
resources by standard names or qualified ones with a domain. A structural schema cannot
constrain map keys, and a CEL regex over keys of unbounded length exceeds the API server's
estimated-cost budget, so the CRD admits any key. The models refuse the bad ones, naming the
key: the pool then reports InvalidSpec (condition and Event) instead of the operator writing
Deployments the API server refuses on every tick.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

KEY_ERROR_TYPE: Final = "chiron_key"
_PREFIX: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
STANDARD_RESOURCES: Final = frozenset({"cpu", "memory", "ephemeral-storage"})


def qualified_name_problem(key: str) -> str | None:
    """Why `key` is no qualified name (an optional DNS-1123 prefix of at most 253 characters,
    '/', then a name of at most 63), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _PREFIX.match(prefix)):
        return "its prefix must be a DNS-1123 subdomain of at most 253 characters"
    if len(name) > 63 or not _NAME.match(name):
        return (
            "its name must be at most 63 characters of letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit"
        )
    return None


def resource_name_problem(key: str) -> str | None:
    """Why `key` names no resource a container may request, or None."""
    if key in STANDARD_RESOURCES or key.startswith("hugepages-"):
        return None
    if "/" not in key:
        return "must be cpu, memory, ephemeral-storage, hugepages-<size> or a <domain>/<name>"
    return qualified_name_problem(key)


def _errors(
    field: str, keys: Iterable[str], check: Callable[[str], str | None]
) -> Iterator[InitErrorDetails]:
    for key in keys:
        found = check(key)
        if found is not None:
            yield InitErrorDetails(
                # The error's path ends in the key, so the message need not repeat it.
                type=PydanticCustomError(KEY_ERROR_TYPE, "bad key: {problem}", {"problem": found}),
                loc=(field, key),
                input=key,
            )


def check_keys(
    owner: str, qualified: Mapping[str, Iterable[str]], resources: Mapping[str, Iterable[str]]
) -> None:
    """Raise a ValidationError naming every bad key: `qualified` maps hold qualified names,
    `resources` maps resource names; both by the field's wire name."""
    errors = [
        e for field, keys in qualified.items() for e in _errors(field, keys, qualified_name_problem)
    ]
    errors += [
        e for field, keys in resources.items() for e in _errors(field, keys, resource_name_problem)
    ]
    if errors:
        raise ValidationError.from_exception_data(owner, errors)
