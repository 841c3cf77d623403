"""One streamed completion put back together as the whole response vLLM would have returned.

Batch requests go to the pods streamed so that the gateway sees their first token (the routing
core paces batch prefills on mixed and interactive pods by it) while the output file still
holds whole bodies. `Completion.add` takes the chunks in order (`chat.completion.chunk` or
`text_completion`), `Completion.body` gives the `chat.completion` or `text_completion` object:

- the envelope (`id`, `created`, `model`, `system_fingerprint`, ...) of the first chunk;
- per choice, by `index`: content, reasoning and completion text concatenated, tool calls
  merged by their own `index` (the name and id as first sent, the arguments concatenated),
  logprobs concatenated (chat `content`/`refusal` lists, completion `tokens`,
  `token_logprobs`, `top_logprobs`, `text_offset`), and the last non-null `finish_reason`,
  `stop_reason` and any other field (`logprobs`, `finish_reason` and `stop_reason` are null
  when no chunk set them, as in vLLM's whole answer);
- `usage` from the chunk that carries it (the request asks for it with
  `stream_options.include_usage`).
"""

from __future__ import annotations

from typing import Any, Final

_DELTA_TEXT: Final = ("content", "reasoning_content", "reasoning", "refusal")
_CHAT_LOGPROBS: Final = ("content", "refusal")
_TEXT_LOGPROBS: Final = ("tokens", "token_logprobs", "top_logprobs", "text_offset")
_ENVELOPE_SKIP: Final = frozenset({"object", "choices", "usage"})
_CHOICE_SKIP: Final = frozenset({"index", "delta", "text", "logprobs"})


class Completion:
    """The chunks of one streamed completion so far."""

    def __init__(self) -> None:
        self.chat = True
        self.envelope: dict[str, Any] = {}
        self.usage: Any = None
        self._choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: dict[str, Any]) -> bool:
        """Fold in one chunk; True when it carries output (a token, a tool call, an end)."""
        if not self.envelope:
            self.chat = chunk.get("object") == "chat.completion.chunk"
            self.envelope = {k: v for k, v in chunk.items() if k not in _ENVELOPE_SKIP}
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        output = False
        for choice in chunk.get("choices") or ():
            output = self._add_choice(choice) or output
        return output

    def _add_choice(self, part: dict[str, Any]) -> bool:
        index = int(part.get("index", 0))
        choice = self._choices.setdefault(index, {"index": index})
        output = False
        for key, value in part.items():
            if key not in _CHOICE_SKIP and value is not None:
                choice[key] = value
                output = output or key == "finish_reason"
        if self.chat:
            delta = part.get("delta") or {}
            output = _merge_delta(choice.setdefault("message", {}), delta) or output
        elif part.get("text"):
            choice["text"] = choice.get("text", "") + part["text"]
            output = True
        keys = _CHAT_LOGPROBS if self.chat else _TEXT_LOGPROBS
        _merge_logprobs(choice, part.get("logprobs"), keys)
        return output

    def body(self) -> dict[str, Any]:
        """The whole response: what vLLM answers the same request unstreamed."""
        choices = []
        for index in sorted(self._choices):
            choice = dict(self._choices[index])
            for key in ("logprobs", "finish_reason", "stop_reason"):  # vLLM's whole choice
                choice.setdefault(key, None)
            if self.chat:
                message = choice.setdefault("message", {})
                message.setdefault("role", "assistant")
                message.setdefault("content", None)
            else:
                choice.setdefault("text", "")
            choices.append(choice)
        kind = "chat.completion" if self.chat else "text_completion"
        return {**self.envelope, "object": kind, "choices": choices, "usage": self.usage}


def _merge_delta(message: dict[str, Any], delta: dict[str, Any]) -> bool:
    output = False
    for key, value in delta.items():
        if value is None:
            continue
        if key in _DELTA_TEXT:
            message[key] = (message.get(key) or "") + value
            output = output or bool(value)
        elif key == "tool_calls":
            _merge_tool_calls(message.setdefault("tool_calls", []), value)
            output = True
        else:
            message[key] = value  # role, and anything newer vLLM sends
    return output


def _merge_tool_calls(calls: list[dict[str, Any]], parts: list[dict[str, Any]]) -> None:
    for part in parts:
        index = int(part.get("index", len(calls)))
        while len(calls) <= index:
            calls.append({"function": {"arguments": ""}})
        call = calls[index]
        for key, value in part.items():
            if key == "function":
                function = call["function"]
                for name, piece in (value or {}).items():
                    if name == "arguments":
                        function["arguments"] += piece or ""
                    elif piece is not None:
                        function[name] = piece
            elif key != "index" and value is not None:
                call[key] = value


def _merge_logprobs(choice: dict[str, Any], part: Any, keys: tuple[str, ...]) -> None:
    if not isinstance(part, dict):
        return
    merged = choice.get("logprobs")
    if not isinstance(merged, dict):
        merged = choice["logprobs"] = {}
    for key, value in part.items():
        if key in keys and isinstance(value, list):
            merged[key] = [*(merged.get(key) or []), *value]
        elif value is not None:
            merged[key] = value
