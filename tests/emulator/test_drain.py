"""Graceful shutdown, as vLLM's --shutdown-timeout: on SIGTERM /health and new requests get 503,
the requests in flight finish, then the process exits; the timeout aborts what is left."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp

from tests.emulator.emukit import running
from tests.emulator.test_process import start

# Long enough to still be streaming when the checks below run (~25 ms a token at TP 1).
LONG_TOKENS = 120


async def _wait_healthy(session: aiohttp.ClientSession) -> None:
    async with asyncio.timeout(10):
        while True:
            async with session.get("/health") as resp:
                if resp.status == 200:
                    return
            await asyncio.sleep(0.05)


def _events(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.splitlines() if line]


async def test_sigterm_lets_the_request_in_flight_finish_refuses_new_ones_and_exits_0() -> None:
    proc, url, _ = await start("--shutdown-timeout", "30", "--max-num-seqs", "4")
    try:
        async with aiohttp.ClientSession(base_url=url) as session:
            await _wait_healthy(session)
            body = {"prompt": "x", "max_tokens": LONG_TOKENS, "stream": True}
            async with session.post("/v1/completions", json=body) as resp:
                assert (await resp.content.readline()).startswith(b"data: {")
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.2)
                async with session.get("/health") as health:
                    assert health.status == 503  # the readiness probe fails while draining
                refused = {"prompt": "x", "max_tokens": 1}
                async with session.post("/v1/completions", json=refused) as late:
                    assert late.status == 503
                rest = (await resp.content.read()).decode()
        events = _events(rest)
        assert events[-1] == "[DONE]"
        tokens = [e for e in events if e.startswith("{") and "choices" in json.loads(e)]
        assert len(tokens) == LONG_TOKENS - 1  # the first came before the signal
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_an_idle_server_exits_at_once_on_sigterm() -> None:
    proc, url, _ = await start("--shutdown-timeout", "600")
    try:
        async with aiohttp.ClientSession(base_url=url) as session:
            await _wait_healthy(session)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_the_shutdown_timeout_aborts_what_is_left() -> None:
    async with running("--max-num-seqs", "4") as emu:
        body = {"prompt": "x", "max_tokens": 5000, "stream": True}
        async with emu.client.session.post("/v1/completions", json=body) as resp:
            assert (await resp.content.readline()).startswith(b"data: {")
            loop = asyncio.get_running_loop()
            began = loop.time()
            assert await emu.server.drain(0.3) == 1
            assert 0.25 <= loop.time() - began < 2.0
            await emu.server.stop()
            rest = (await resp.content.read()).decode()
    events = _events(rest)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["type"] == "AbortError"


async def test_force_ends_the_drain_at_once() -> None:
    # What `serve` sets on a second SIGTERM or SIGINT, as uvicorn's "CTRL+C to force quit".
    async with running("--max-num-seqs", "4") as emu:
        body = {"prompt": "x", "max_tokens": 5000, "stream": True}
        async with emu.client.session.post("/v1/completions", json=body) as resp:
            assert (await resp.content.readline()).startswith(b"data: {")
            force = asyncio.Event()
            asyncio.get_running_loop().call_later(0.2, force.set)
            async with asyncio.timeout(5):
                assert await emu.server.drain(600, force) == 1
