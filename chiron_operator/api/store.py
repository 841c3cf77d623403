"""Where the pool's gateway keeps its batches (`spec.gateway.store`).

`chiron-gateway` serves the OpenAI Batch API: uploaded files, batches and the global batch queue
live in a durable store, so an accepted batch survives a gateway restart. Two kinds:

- SQLite: one file on a PersistentVolumeClaim the operator creates (`<pool>-gateway-store`).
  One process may own the file, so the gateway runs one replica, replaced with a Recreate
  rollout (a ReadWriteOnce volume cannot be mounted by a second pod on another node anyway).
- PostgreSQL: a database the user runs; its URL (password included) comes from a Secret as an
  environment variable, never as an argument. Replicas share it and elect one dispatcher
  among themselves with an advisory lock.

No cross-field rule lives here: `rules.py` reads `StoreType`, so the rules sit on the gateway's
node (`api/gateway.py`), which imports both.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import Field

from chiron_operator.api.base import SpecModel

# A positive amount of bytes in Kubernetes quantity notation (a subset of resource.Quantity:
# no sign, no milli- or exponent forms, not zero; a PersistentVolumeClaim asks for bytes).
# RE2 syntax, which the API server's pattern check uses: no lookahead.
STORAGE_SIZE_PATTERN: Final = (
    r"^([1-9][0-9]*(\.[0-9]+)?|0?\.[0-9]*[1-9][0-9]*)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
)
DEFAULT_STORE_SIZE: Final = "1Gi"
DEFAULT_URL_KEY: Final = "url"
# Secret keys as Kubernetes allows them (a ConfigMap/Secret data key).
SECRET_KEY_PATTERN: Final = r"^[-._a-zA-Z0-9]+$"


class StoreType(StrEnum):
    """The kind of store the gateway keeps its batches in."""

    SQLITE = "SQLite"
    POSTGRESQL = "PostgreSQL"


class SQLiteStore(SpecModel):
    """The SQLite store's volume (type SQLite): a PersistentVolumeClaim `<pool>-gateway-store`,
    ReadWriteOnce, mounted at /var/lib/chiron-gateway.

    The operator creates the claim when it is missing and never changes or deletes it: it holds
    the accepted batches. It goes with the pool (owner reference), and stays while the gateway
    is disabled or the store switched to PostgreSQL (delete it then if its batches are not
    needed). Its size and class apply at creation; resize a claim whose storage class allows
    expansion with kubectl.
    """

    size: str = Field(
        default=DEFAULT_STORE_SIZE,
        pattern=STORAGE_SIZE_PATTERN,
        max_length=64,
        description="Storage the claim requests, e.g. 1Gi, 500Mi (uploaded batch files and "
        "their results live here).",
    )
    storage_class_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        # A StorageClass name is a DNS-1123 subdomain.
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="StorageClass of the claim. Default: the cluster's default StorageClass.",
    )


class StoreSecretKeyRef(SpecModel):
    """A key of a Secret in the pool's namespace holding the store's URL."""

    name: str = Field(min_length=1, max_length=253, description="Secret name.")
    key: str = Field(
        default=DEFAULT_URL_KEY,
        min_length=1,
        max_length=253,
        pattern=SECRET_KEY_PATTERN,
        description="Key within the Secret.",
    )


class PostgreSQLStore(SpecModel):
    """The PostgreSQL store (required with type PostgreSQL, rejected otherwise): a database the
    gateway replicas share. Create the Secret first, e.g. `kubectl create secret generic
    <name> --from-literal=url=postgresql://user:password@host:5432/db`."""

    url_secret_ref: StoreSecretKeyRef = Field(
        description="Secret key holding the URL, postgresql://user:password@host:5432/db. The "
        "gateway reads it from $CHIRON_GATEWAY_STORE (set from the Secret by the kubelet), so "
        "the password appears in no pod spec and no process list.",
    )


class StoreSpec(SpecModel):
    """Where the gateway keeps uploaded files, batches and the global batch queue.

    SQLite (the default): a file on a PersistentVolumeClaim the operator creates; one gateway
    replica (it owns the file), replaced with a Recreate rollout, so the pool's entrypoint is
    briefly down while a new gateway pod starts. PostgreSQL: a database you run, shared by
    every replica; one of them dispatches queued batch work at a time (a PostgreSQL advisory
    lock), the others take over when it goes away.
    """

    type: StoreType = Field(
        default=StoreType.SQLITE, description="SQLite (one replica) or PostgreSQL."
    )
    # No descriptions: the types' docstrings are the fuller `kubectl explain` text.
    sqlite: SQLiteStore = SQLiteStore()
    postgresql: PostgreSQLStore | None = None
