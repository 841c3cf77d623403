"""OpenAI-compatible request parsing and response bodies, shaped as vLLM's server shapes them.

The emulator has no tokenizer. A prompt's length is estimated as one token per 4 characters
(at least 1); a chat adds 4 tokens per message for the chat template's role markers. A traffic
driver that wants an exact prompt length without sending a huge string adds the extension field
`"chiron_prompt_tokens": N` to the request body: it replaces the estimate.

Output is exactly `max_tokens` filler tokens (`max_completion_tokens` also works for chat;
default 16) with finish_reason "length": there is no EOS to stop at. `priority` (int, default 0)
is passed to the scheduler, which uses it only under `--scheduling-policy priority`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

JSON = dict[str, object]

CHARS_PER_TOKEN: Final = 4
CHAT_TOKENS_PER_MESSAGE: Final = 4
DEFAULT_MAX_TOKENS: Final = 16
PROMPT_TOKENS_FIELD: Final = "chiron_prompt_tokens"
FILLER_WORDS: Final = (
    *(" the", " model", " serves", " tokens", " in", " batches", " while", " a"),
    *(" scheduler", " keeps", " every", " request", " within", " its", " budget", "."),
)


class ApiError(Exception):
    """An error answered as vLLM's OpenAI server does: status plus an `error` object."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind

    def body(self) -> JSON:
        """The JSON body vLLM returns for an error."""
        return {
            "object": "error",
            "message": self.message,
            "type": self.kind,
            "param": None,
            "code": self.status,
        }


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """A validated completion or chat request."""

    model: str
    chat: bool
    prompt_tokens: int
    max_tokens: int
    priority: int
    stream: bool
    include_usage: bool


def estimate_tokens(text: str) -> int:
    """Tokens in `text` by the 4-characters-per-token rule, at least 1."""
    return max(1, -(-len(text) // CHARS_PER_TOKEN))


def _int(body: JSON, name: str, default: int, minimum: int | None = None) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer")
    if minimum is not None and value < minimum:
        raise ApiError(400, f"{name} must be at least {minimum}, got {value}")
    return value


def _completion_prompt_tokens(prompt: object) -> int:
    if isinstance(prompt, str):
        return estimate_tokens(prompt)
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return len(prompt)
        if len(prompt) == 1:
            return _completion_prompt_tokens(prompt[0])
        raise ApiError(400, "the emulator serves one prompt per request")
    raise ApiError(400, "prompt must be a string, a list of token ids or a list of one prompt")


def _message_chars(message: object) -> int:
    if not isinstance(message, dict):
        raise ApiError(400, "each message must be an object")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return len(content or "")
    if isinstance(content, list):
        return sum(
            len(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text", ""), str)
        )
    raise ApiError(400, "message content must be a string or a list of parts")


def _chat_prompt_tokens(messages: object) -> int:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list")
    chars = sum(_message_chars(m) for m in messages)
    return -(-chars // CHARS_PER_TOKEN) + CHAT_TOKENS_PER_MESSAGE * len(messages)


def _model(body: JSON, served: tuple[str, ...]) -> str:
    model = body.get("model")
    if model is None:
        return served[0]
    if model not in served:
        raise ApiError(404, f"The model `{model}` does not exist.", "NotFoundError")
    return str(model)


def _prompt_tokens(body: JSON, chat: bool) -> int:
    # The prompt is validated even when the hint replaces its estimate, as the schema requires it.
    estimate = (
        _chat_prompt_tokens(body.get("messages"))
        if chat
        else _completion_prompt_tokens(body.get("prompt"))
    )
    return _int(body, PROMPT_TOKENS_FIELD, estimate, minimum=1)


def _include_usage(body: JSON) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def parse_request(
    body: object, *, chat: bool, served: tuple[str, ...], max_model_len: int
) -> GenerateRequest:
    """Validate a /v1/completions (`chat` False) or /v1/chat/completions body."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = _model(body, served)
    prompt_tokens = _prompt_tokens(body, chat)
    max_tokens = _int(body, "max_tokens", DEFAULT_MAX_TOKENS, minimum=1)
    if chat:
        max_tokens = _int(body, "max_completion_tokens", max_tokens, minimum=1)
    if _int(body, "n", 1) != 1:
        raise ApiError(400, "the emulator supports n=1 only")
    if prompt_tokens + max_tokens > max_model_len:
        raise ApiError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
            f"{max_tokens} in the completion). Please reduce the length of the messages or "
            "completion.",
        )
    return GenerateRequest(
        model=model,
        chat=chat,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        priority=_int(body, "priority", 0),
        stream=body.get("stream") is True,
        include_usage=_include_usage(body),
    )


class Responses:
    """Builds one request's response bodies, chat or completion, whole or streamed."""

    def __init__(self, req: GenerateRequest, request_id: str, created: int, seed: int) -> None:
        self.req = req
        self.request_id = request_id
        self.created = created
        self._seed = seed

    def token_text(self, index: int) -> str:
        """The filler text of output token `index`, a function of the seed."""
        return FILLER_WORDS[(self._seed + index) % len(FILLER_WORDS)]

    def _envelope(self, obj: str, choices: list[JSON]) -> JSON:
        return {
            "id": self.request_id,
            "object": obj,
            "created": self.created,
            "model": self.req.model,
            "choices": choices,
        }

    def usage(self, completion_tokens: int) -> JSON:
        """OpenAI usage counts."""
        prompt = self.req.prompt_tokens
        return {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion_tokens,
            "completion_tokens": completion_tokens,
        }

    def full(self, completion_tokens: int) -> JSON:
        """The non-streaming response for `completion_tokens` generated tokens."""
        text = "".join(self.token_text(i) for i in range(completion_tokens))
        choice: JSON = {"index": 0, "logprobs": None, "finish_reason": "length"}
        if self.req.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice["stop_reason"] = None
        obj = "chat.completion" if self.req.chat else "text_completion"
        body = self._envelope(obj, [choice])
        body["usage"] = self.usage(completion_tokens)
        return body

    def role_chunk(self) -> JSON:
        """The first chunk of a chat stream, which announces the assistant role."""
        delta: JSON = {"role": "assistant", "content": ""}
        choice: JSON = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        return self._envelope("chat.completion.chunk", [choice])

    def token_chunk(self, index: int) -> JSON:
        """The streamed chunk of token `index`; the last one carries finish_reason."""
        last = index == self.req.max_tokens - 1
        finish = "length" if last else None
        text = self.token_text(index)
        choice: JSON = {"index": 0, "logprobs": None, "finish_reason": finish}
        if self.req.chat:
            choice["delta"] = {"content": text}
            return self._envelope("chat.completion.chunk", [choice])
        choice["text"] = text
        choice["stop_reason"] = None
        return self._envelope("text_completion", [choice])

    def usage_chunk(self, completion_tokens: int) -> JSON:
        """The final chunk sent when `stream_options.include_usage` is true."""
        obj = "chat.completion.chunk" if self.req.chat else "text_completion"
        body = self._envelope(obj, [])
        body["usage"] = self.usage(completion_tokens)
        return body
