"""The pool's own name: it becomes Service names and label values, so it is held to theirs.

The operator names the pool's objects after it (`<pool>`, `<pool>-interactive`,
`<pool>-batch`, `<pool>-gateway`, `<pool>-<role>`) and labels every one of them with it.
Service names are DNS-1035 labels of at most 63 characters and `<pool>-interactive` is the
longest derived name, so a pool name is a DNS-1035 label of at most 51 characters. The API
server checks it with the CRD's root rule (CEL sees `self.metadata.name`) and the models with
`check_pool_name`; `kube.labels` keeps the same limit for the objects it builds.
"""

from __future__ import annotations

import re
from typing import Final

LONGEST_SUFFIX: Final = "-interactive"
MAX_POOL_NAME: Final = 63 - len(LONGEST_SUFFIX)
POOL_NAME_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
POOL_NAME_MESSAGE: Final = (
    f"metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting "
    f"with a letter) of at most {MAX_POOL_NAME} characters: the pool's Services are named "
    f"<pool>, <pool>{LONGEST_SUFFIX} and <pool>-batch"
)
POOL_NAME_RULE: Final = {
    "rule": f"self.metadata.name.size() <= {MAX_POOL_NAME} && "
    f"self.metadata.name.matches('{POOL_NAME_PATTERN}')",
    "message": POOL_NAME_MESSAGE,
    "reason": "FieldValueInvalid",
}
_PATTERN = re.compile(POOL_NAME_PATTERN)


def check_pool_name(name: object) -> str | None:
    """The violation message for a pool name, or None when every derived name is valid."""
    if isinstance(name, str) and len(name) <= MAX_POOL_NAME and _PATTERN.match(name):
        return None
    return POOL_NAME_MESSAGE
