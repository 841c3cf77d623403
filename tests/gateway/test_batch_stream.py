"""Streamed completions put back together as the whole body vLLM returns unstreamed."""

from __future__ import annotations

from typing import Any

from chiron_operator.gateway.batch_stream import Completion

ENVELOPE = {"id": "chatcmpl-1", "created": 7, "model": "m", "system_fingerprint": None}


def chat_chunk(*choices: dict[str, Any], usage: Any = None) -> dict[str, Any]:
    return {**ENVELOPE, "object": "chat.completion.chunk", "choices": list(choices), "usage": usage}


def fold(chunks: list[dict[str, Any]]) -> tuple[Completion, list[bool]]:
    completion = Completion()
    return completion, [completion.add(c) for c in chunks]


def test_a_chat_stream_becomes_a_chat_completion() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    chunks = [
        chat_chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}),
        chat_chunk({"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}),
        chat_chunk({"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}),
        chat_chunk(usage=usage),
    ]
    completion, output = fold(chunks)
    # The role announcement is no output; the first token is.
    assert output == [False, True, True, False]
    assert completion.body() == {
        **ENVELOPE,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
            }
        ],
        "usage": usage,
    }


def test_tool_calls_merge_by_index_and_logprobs_concatenate() -> None:
    call = {"index": 0, "id": "call-1", "type": "function"}
    chunks = [
        chat_chunk({"index": 0, "delta": {"role": "assistant"}}),
        chat_chunk(
            {
                "index": 0,
                "delta": {"tool_calls": [{**call, "function": {"name": "f", "arguments": ""}}]},
            }
        ),
        chat_chunk(
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}}
        ),
        chat_chunk(
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
                "logprobs": {"content": [{"token": "x", "logprob": -0.1}]},
            }
        ),
        chat_chunk(
            {
                "index": 0,
                "delta": {},
                "logprobs": {"content": [{"token": "y", "logprob": -0.2}]},
                "finish_reason": "tool_calls",
                "stop_reason": None,
            }
        ),
    ]
    completion, output = fold(chunks)
    assert output == [False, True, True, True, True]
    (choice,) = completion.body()["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call-1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
        ],
    }
    assert choice["logprobs"] == {
        "content": [{"token": "x", "logprob": -0.1}, {"token": "y", "logprob": -0.2}]
    }
    assert choice["finish_reason"] == "tool_calls"


def test_a_text_completion_with_two_choices() -> None:
    def chunk(index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        logprobs = {
            "tokens": [text],
            "token_logprobs": [-1.0],
            "top_logprobs": None,
            "text_offset": [0],
        }
        return {
            **ENVELOPE,
            "object": "text_completion",
            "choices": [
                {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
            ],
        }

    completion, output = fold(
        [chunk(1, "b"), chunk(0, "a"), chunk(0, "c", "length"), chunk(1, "d", "length")]
    )
    assert output == [True, True, True, True]
    body = completion.body()
    assert body["object"] == "text_completion" and body["usage"] is None
    assert [c["text"] for c in body["choices"]] == ["ac", "bd"]
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][0]["logprobs"]["tokens"] == ["a", "c"]
    assert body["choices"][0]["logprobs"]["text_offset"] == [0, 0]
    assert all(c["finish_reason"] == "length" for c in body["choices"])


def test_an_empty_stream_is_a_completion_with_no_choices() -> None:
    completion, _ = fold([])
    assert completion.body() == {"object": "chat.completion", "choices": [], "usage": None}
