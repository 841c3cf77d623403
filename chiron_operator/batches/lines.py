"""A batch's output and error lines, in the format `vllm run-batch` writes.

Output: `{"id": "vllm-...", "custom_id": ..., "response": {"status_code": 200, "request_id":
..., "body": <the completion>}, "error": null}`. Error: the same with `"body": null` and
`"error": {"code", "message"}` (an upstream error object is kept as the pod gave it), and
`"response": null` when no pod ever answered (retries exhausted, the batch expired).
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Final

EXPIRED_CODE: Final = "batch_expired"
EXPIRED_MESSAGE: Final = "the batch's completion window ended before this request ran"


def _ids() -> tuple[str, str]:
    return f"vllm-{secrets.token_hex(16)}", f"vllm-batch-{secrets.token_hex(16)}"


def output_line(custom_id: str, status_code: int, body: Any) -> str:
    """The line of a request a pod answered (its body as the pod returned it)."""
    line_id, request_id = _ids()
    response = {"status_code": status_code, "request_id": request_id, "body": body}
    return json.dumps({"id": line_id, "custom_id": custom_id, "response": response, "error": None})


def error_line(
    custom_id: str, code: str, message: str, status_code: int | None = None, error: Any = None
) -> str:
    """The line of a request that failed for good: `error` is the pod's own error object when
    it answered one; otherwise `{code, message}` says what the gateway saw."""
    line_id, request_id = _ids()
    response = None
    if status_code is not None:
        response = {"status_code": status_code, "request_id": request_id, "body": None}
    detail = error if isinstance(error, dict) else {"code": code, "message": message}
    return json.dumps(
        {"id": line_id, "custom_id": custom_id, "response": response, "error": detail}
    )


def expired_line(custom_id: str) -> str:
    return error_line(custom_id, EXPIRED_CODE, EXPIRED_MESSAGE)


def output_tokens(body: Any) -> int | None:
    """`usage.completion_tokens` of a completion, when it reports one."""
    usage = body.get("usage") if isinstance(body, dict) else None
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and tokens >= 0 else None
