"""The OpenAI endpoints, /health and error answers, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from tests.emulator.emukit import Running, running, sample_value

RUNNING = "vllm:num_requests_running"


async def test_models_lists_every_served_name() -> None:
    flags = ("--served-model-name", "chat", "alias", "--max-model-len", "4096")
    async with running(*flags) as emu, emu.client.session.get("/v1/models") as resp:
        body = await resp.json()
    assert [m["id"] for m in body["data"]] == ["chat", "alias"]
    assert body["data"][0]["root"] == "tiny" and body["data"][0]["max_model_len"] == 4096


async def test_completion_generates_exactly_max_tokens_with_usage() -> None:
    async with running("--time-scale", "20") as emu:
        r = await emu.client.complete(model="tiny", prompt="a" * 40, max_tokens=7)
        default = await emu.client.complete()
    assert r.status == 200
    assert r.body["object"] == "text_completion" and r.body["model"] == "tiny"
    choice = r.body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["text"].count(" ") == 7
    assert r.body["usage"] == {"prompt_tokens": 10, "total_tokens": 17, "completion_tokens": 7}
    assert default.body["usage"]["completion_tokens"] == 16


async def test_prompt_length_hint_and_token_id_prompts() -> None:
    async with running("--time-scale", "20") as emu:
        hinted = await emu.client.complete(prompt="x", chiron_prompt_tokens=3000, max_tokens=1)
        ids = await emu.client.complete(prompt=[1, 2, 3, 4, 5], max_tokens=1)
    assert hinted.body["usage"]["prompt_tokens"] == 3000
    assert ids.body["usage"]["prompt_tokens"] == 5


async def test_chat_completion_whole_and_streamed() -> None:
    messages = [{"role": "user", "content": "x" * 8}]
    async with running("--time-scale", "20") as emu:
        whole = await emu.client.complete(
            "/v1/chat/completions", messages=messages, max_completion_tokens=3
        )
        streamed = await emu.client.stream("/v1/chat/completions", messages=messages, max_tokens=3)
    assert whole.body["object"] == "chat.completion"
    assert whole.body["choices"][0]["message"]["role"] == "assistant"
    # 8 characters = 2 tokens, plus the template's 4 per message.
    assert whole.body["usage"]["prompt_tokens"] == 6
    payloads = [p for _, p in streamed.events]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:]]
    assert len(contents) == 3 and all(contents)
    assert [c["choices"][0]["finish_reason"] for c in chunks[1:]] == [None, None, "length"]


@pytest.mark.parametrize("max_tokens", [1, 25])
async def test_streaming_returns_max_tokens_chunks_then_done(max_tokens: int) -> None:
    async with running("--time-scale", "20") as emu:
        r = await emu.client.stream(max_tokens=max_tokens)
        usage = await emu.client.stream(max_tokens=2, stream_options={"include_usage": True})
    assert r.status == 200
    payloads = [p for _, p in r.events]
    assert payloads[-1] == "[DONE]" and len(payloads) == max_tokens + 1
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "text_completion" and c["choices"][0]["text"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "usage" not in chunks[-1]  # only with stream_options.include_usage, as in vLLM
    final = json.loads(usage.events[-2][1])
    assert final["choices"] == [] and final["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": "other"}, 404, "does not exist"),
        ({"max_tokens": 8000, "chiron_prompt_tokens": 500}, 400, "maximum context length"),
        ({"max_tokens": 0}, 400, "max_tokens"),
        ({"max_tokens": "many"}, 400, "max_tokens"),
        ({"priority": 1.5}, 400, "priority"),
        ({"n": 2}, 400, "n=1"),
        ({"prompt": ["a", "b"]}, 400, "one prompt"),
        ({"prompt": None}, 400, "prompt"),
    ],
)
async def test_invalid_requests_get_vllm_style_errors(
    body: dict[str, object], status: int, needle: str
) -> None:
    async with running() as emu:
        r = await emu.client.post("/v1/completions", {"prompt": "hello", **body})
    assert r.status == status
    assert r.body["object"] == "error" and r.body["code"] == status
    assert needle in str(r.body["message"])


async def test_a_body_that_is_not_json_is_a_400() -> None:
    async with running() as emu, emu.client.session.post("/v1/completions", data=b"{") as resp:
        assert resp.status == 400
        assert (await resp.json())["object"] == "error"


async def test_health_is_503_during_the_startup_delay_then_200() -> None:
    async with running("--startup-delay-s", "0.6", "--time-scale", "2") as emu:
        session = emu.client.session
        async with session.get("/health") as resp:
            assert resp.status == 503
        r = await emu.client.complete(max_tokens=1)
        assert r.status == 503
        async with session.get("/metrics") as resp:
            assert resp.status == 200  # scrapes work while starting, showing an idle engine
        await asyncio.sleep(0.35)  # 0.6 s modelled / 2
        async with session.get("/health") as resp:
            assert resp.status == 200
        assert (await emu.client.complete(max_tokens=1)).status == 200


async def poll_gauge(emu: Running, name: str, want: float, timeout_s: float) -> float:
    """Scrape until gauge `name` equals `want` or `timeout_s` passes; its last value."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = sample_value(await emu.client.metrics(), name)
        if value == want or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.01)


async def send_then_hang_up(url: str, stream: bool, ready: asyncio.Event) -> None:
    """POST a request of 2000 tokens on a connection of its own; `ready` once it is under way."""
    body = {"prompt": "hello", "max_tokens": 2000, "stream": stream}
    async with (
        aiohttp.ClientSession(base_url=url) as session,
        session.post("/v1/completions", json=body) as resp,
    ):
        # A stream's headers and first event come at once; a whole response only at the end.
        await resp.content.readline()
        ready.set()
        await asyncio.Event().wait()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_closes_its_connection_aborts_its_request(stream: bool) -> None:
    # 2000 tokens at the 8B profile's pace take several seconds: only an abort ends it sooner.
    async with running("--time-scale", "1") as emu:
        ready = asyncio.Event()
        client = asyncio.create_task(send_then_hang_up(emu.server.url, stream, ready))
        assert await poll_gauge(emu, RUNNING, 1, timeout_s=2.0) == 1
        await asyncio.sleep(0.2)
        assert ready.is_set() is stream
        assert sample_value(await emu.client.metrics(), RUNNING) == 1
        # Cancelling the client task closes its session and with it the TCP connection.
        client.cancel()
        await asyncio.gather(client, return_exceptions=True)
        assert await poll_gauge(emu, RUNNING, 0, timeout_s=0.5) == 0
        text = await emu.client.metrics()
    assert sample_value(text, "vllm:request_success_total", finished_reason="abort") == 1
    assert sample_value(text, "vllm:request_success_total", finished_reason="length") == 0
    assert sample_value(text, "vllm:kv_cache_usage_perc") == 0
