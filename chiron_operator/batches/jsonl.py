"""Reading a batch input file: one request a line, every error naming its line.

A line is `{"custom_id": ..., "method": "POST", "url": "/v1/chat/completions", "body": {...}}`,
as OpenAI and `vllm run-batch` read it. The file is checked whole when it is uploaded (JSON,
fields, duplicate `custom_id`s, the request limit), so a bad file is refused before it is stored;
what depends on the batch (its endpoint, the models the pool serves) is checked when a batch is
made from it (`check_batch_lines`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any, Final

from chiron_operator.batches.model import ENDPOINTS, InputRequest

MAX_REPORTED_ERRORS: Final = 20
"""Errors reported for one file: enough to fix a pattern, not a wall of text."""
MAX_CUSTOM_ID_CHARS: Final = 512


@dataclass(frozen=True, slots=True)
class LineError:
    """What is wrong with one line of an input file (OpenAI's batch error shape)."""

    line: int | None
    code: str
    message: str
    param: str | None = None

    def to_openai(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


class InputFileError(ValueError):
    """The file is not a valid batch input file; `errors` says where (first ones only)."""

    def __init__(self, errors: list[LineError], total: int) -> None:
        self.errors = errors[:MAX_REPORTED_ERRORS]
        self.total = total
        more = f" (and {total - len(self.errors)} more)" if total > len(self.errors) else ""
        super().__init__("; ".join(str(e) for e in self.errors) + more)

    @property
    def first_line(self) -> int | None:
        return self.errors[0].line if self.errors else None


def parse_input(content: bytes, *, max_requests: int) -> list[InputRequest]:
    """Every request of a batch input file, in line order; InputFileError naming the lines."""
    requests: list[InputRequest] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    for line_no, raw in _lines(content):
        try:
            request = _request(line_no, raw)
        except _InvalidLineError as exc:
            errors.append(exc.error)
            continue
        first = seen.setdefault(request.custom_id, line_no)
        if first != line_no:
            message = f"custom_id {request.custom_id!r} is already used on line {first}"
            errors.append(LineError(line_no, "duplicate_custom_id", message, "custom_id"))
            continue
        requests.append(request)
    if not requests and not errors:
        errors.append(LineError(None, "empty_file", "the file holds no request"))
    if len(requests) + len(errors) > max_requests:
        message = f"the file holds {len(requests) + len(errors)} requests; at most {max_requests}"
        errors.insert(0, LineError(None, "too_many_requests", message))
    if errors:
        raise InputFileError(errors, len(errors))
    return requests


def check_batch_lines(
    requests: list[InputRequest], endpoint: str, models: Collection[str]
) -> list[LineError]:
    """What makes these requests unfit for a batch on `endpoint`, against the pool's `models`
    (an empty collection: the models are not known yet, so they are not checked)."""
    errors: list[LineError] = []
    for request in requests:
        if request.url != endpoint:
            message = f"url {request.url!r} differs from the batch's endpoint {endpoint!r}"
            errors.append(LineError(request.line_no, "invalid_url", message, "url"))
        elif models and request.model not in models:
            served = ", ".join(sorted(models))
            message = f"model {request.model!r} is not served by this pool (it serves {served})"
            errors.append(LineError(request.line_no, "model_not_found", message, "body.model"))
    return errors


def _lines(content: bytes) -> Iterator[tuple[int, bytes]]:
    for index, raw in enumerate(content.split(b"\n"), start=1):
        if raw.strip():
            yield index, raw


class _InvalidLineError(Exception):
    def __init__(self, error: LineError) -> None:
        self.error = error


def _request(line_no: int, raw: bytes) -> InputRequest:
    def fail(code: str, message: str, param: str | None = None) -> _InvalidLineError:
        return _InvalidLineError(LineError(line_no, code, message, param))

    try:
        item: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise fail("invalid_json", f"not valid JSON: {exc}") from None
    if not isinstance(item, dict):
        raise fail("invalid_request", "a line must be a JSON object")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise fail("missing_custom_id", "custom_id must be a non-empty string", "custom_id")
    if len(custom_id) > MAX_CUSTOM_ID_CHARS:
        message = f"custom_id is longer than {MAX_CUSTOM_ID_CHARS} characters"
        raise fail("invalid_custom_id", message, "custom_id")
    if item.get("method") != "POST":
        raise fail("invalid_method", "method must be POST", "method")
    url = item.get("url")
    if url not in ENDPOINTS:
        allowed = " or ".join(ENDPOINTS)
        raise fail("invalid_url", f"url must be {allowed}, not {url!r}", "url")
    body = item.get("body")
    if not isinstance(body, dict):
        raise fail("invalid_body", "body must be a JSON object", "body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise fail("missing_model", "body.model must be a non-empty string", "body.model")
    return InputRequest(line_no, custom_id, url, model, json.dumps(body), _max_tokens(body))


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
