"""Streamed completions put back together as the whole body vLLM returns unstreamed, and a
batch request's upstream call reading the stream (`batch_upstream.call`)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web

from chiron_operator.core.enums import Role
from chiron_operator.gateway.batch_stream import Completion
from chiron_operator.gateway.batch_upstream import Answer, Verdict, call, upstream_payload
from chiron_operator.gateway.config import PodInfo

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


# --- `batch_upstream.call` against a pod that streams as given --------------------------------


async def _answering(events: list[bytes], status: int = 200) -> tuple[web.AppRunner, PodInfo]:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        if status != 200:
            return web.json_response({"error": {"message": "bad model"}}, status=status)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            await response.write(event)
        return response

    app = web.Application()
    app.router.add_post("/v1/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, PodInfo("pod-0", Role.MIXED, f"http://127.0.0.1:{port}", 8)


def _event(chunk: dict[str, Any] | str) -> bytes:
    return f"data: {chunk if isinstance(chunk, str) else json.dumps(chunk)}\n\n".encode()


TEXT = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m"}


async def _call(events: list[bytes], status: int = 200) -> tuple[Answer, list[str]]:
    runner, pod = await _answering(events, status)
    firsts: list[str] = []
    payload = upstream_payload(json.dumps({"model": "m", "prompt": "hi", "stream": False}))
    try:
        async with aiohttp.ClientSession() as session:
            answer = await call(
                session, pod, "/v1/completions", payload, 10.0,
                on_first_token=lambda: firsts.append("first"),
            )  # fmt: skip
    finally:
        await runner.cleanup()
    return answer, firsts


async def test_a_whole_stream_is_one_answer_and_one_first_token() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    events = [
        _event({**TEXT, "choices": [{"index": 0, "text": "a", "finish_reason": None}]}),
        _event({**TEXT, "choices": [{"index": 0, "text": "b", "finish_reason": "length"}]}),
        _event({**TEXT, "choices": [], "usage": usage}),
        _event("[DONE]"),
    ]
    answer, firsts = await _call(events)
    assert answer.verdict is Verdict.DONE and firsts == ["first"]
    assert answer.body["choices"][0]["text"] == "ab" and answer.body["usage"] == usage


async def test_a_stream_cut_short_or_ending_in_an_error_is_tried_again() -> None:
    token = _event({**TEXT, "choices": [{"index": 0, "text": "a"}]})
    cut, _ = await _call([token])
    assert cut.verdict is Verdict.RETRY and "before [DONE]" in cut.describe()
    error = _event({"object": "error", "message": "engine died", "type": "InternalError"})
    failed, firsts = await _call([token, error])
    assert failed.verdict is Verdict.RETRY and "engine died" in failed.describe()
    assert firsts == ["first"]


async def test_an_error_status_is_read_whole() -> None:
    answer, firsts = await _call([], status=404)
    assert answer.verdict is Verdict.FAILED and "bad model" in answer.describe()
    assert firsts == []
