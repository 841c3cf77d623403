"""The Batch API's records: files, batches and the request rows of a batch (no I/O).

Field names and statuses are OpenAI's (`validating`, `failed`, `in_progress`, `finalizing`,
`completed`, `expired`, `cancelling`, `cancelled`), so the official clients parse them. Times are
integer Unix seconds, as OpenAI's `created_at` and friends are.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

ENDPOINTS: Final = ("/v1/chat/completions", "/v1/completions")
"""The generation endpoints a batch may target (what the pool's vLLM pods serve)."""


class BatchStatus(StrEnum):
    """A batch's lifecycle, as OpenAI names it."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL: Final = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)

STATUS_TIME_FIELD: Final = {
    BatchStatus.IN_PROGRESS: "in_progress_at",
    BatchStatus.FINALIZING: "finalizing_at",
    BatchStatus.COMPLETED: "completed_at",
    BatchStatus.FAILED: "failed_at",
    BatchStatus.EXPIRED: "expired_at",
    BatchStatus.CANCELLING: "cancelling_at",
    BatchStatus.CANCELLED: "cancelled_at",
}
"""The timestamp a transition into a status sets."""


class RequestState(StrEnum):
    """Where one request of a batch stands: waiting to run, or answered once for good."""

    QUEUED = "queued"
    DONE = "done"  # its line is in the output file
    FAILED = "failed"  # its line is in the error file


class FileKind(StrEnum):
    """Where a file's content comes from."""

    UPLOAD = "upload"  # bytes a client posted
    OUTPUT = "output"  # a batch's done rows, in input order
    ERROR = "error"  # a batch's failed rows, in input order


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


def output_file_id(batch_id: str) -> str:
    """The output file's id, derived from its batch's so that finalizing twice is idempotent."""
    return f"file-{batch_id.removeprefix('batch_')}-output"


def error_file_id(batch_id: str) -> str:
    return f"file-{batch_id.removeprefix('batch_')}-errors"


@dataclass(slots=True)
class FileRecord:
    """A file as `GET /v1/files/{id}` describes it, plus where its content comes from."""

    id: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    kind: FileKind = FileKind.UPLOAD
    batch_id: str | None = None  # the batch an output or error file belongs to

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass(frozen=True, slots=True)
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0

    def to_openai(self) -> dict[str, int]:
        return {"total": self.total, "completed": self.completed, "failed": self.failed}


@dataclass(slots=True)
class BatchRecord:
    """A batch as `GET /v1/batches/{id}` describes it (less its request counts, counted live).

    `expires_at` is `created_at` plus the completion window: the deadline of the batch's request
    group in the global queue, and the time it expires.
    """

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    status: BatchStatus
    created_at: int
    expires_at: int
    metadata: dict[str, str] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None

    def to_openai(self, counts: RequestCounts) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.value,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": counts.to_openai(),
            "metadata": self.metadata or None,
        }


@dataclass(frozen=True, slots=True)
class InputRequest:
    """One valid line of a batch input file, as its request row is stored.

    `line_no` is 1-based, as editors count; `body` is the request's JSON text as it goes
    upstream; `max_tokens` is its output cap when it gives one.
    """

    line_no: int
    custom_id: str
    url: str
    model: str
    body: str
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class QueuedRequest:
    """A request row still to run, as the dispatcher loads it (its body is read when it is sent)."""

    batch_id: str
    line_no: int
    custom_id: str
    deadline_s: float
    max_tokens: int | None
    attempts: int


@dataclass(frozen=True, slots=True)
class OutputStats:
    """Output lengths (tokens) of the completed batch requests the store remembers."""

    count: int = 0
    mean_tokens: float = float("nan")
    std_tokens: float = float("nan")


def estimate_output_tokens(max_tokens: int | None, mean_tokens: float) -> float:
    """One queued request's output-token estimate: the learned mean of completed batch
    requests, never above the request's own cap; its cap alone while nothing is learned."""
    if not math.isfinite(mean_tokens):
        return float(max_tokens or 0)
    return min(float(max_tokens), mean_tokens) if max_tokens else mean_tokens
