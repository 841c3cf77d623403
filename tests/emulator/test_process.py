"""The installed entry point: starts, serves, and exits 0 on SIGTERM, aborting in-flight work."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path

import aiohttp

SCRIPT = Path(sys.executable).parent / "chiron-emulator"
# The console script pods use; `python -m` where the package is not installed as a distribution.
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "chiron_operator.emulator"]
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


async def start(*flags: str) -> tuple[asyncio.subprocess.Process, str, list[str]]:
    """Start the console script on a free port; return it, its URL and its log lines so far."""
    proc = await asyncio.create_subprocess_exec(
        *COMMAND,
        "meta-llama/Llama-3.1-8B-Instruct",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        *flags,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(20):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, f"emulator exited early: {lines}"
            lines.append(line)
            if match := LISTENING.search(line):
                return proc, match.group(1), lines


async def test_sigterm_aborts_in_flight_requests_and_exits_0() -> None:
    proc, url, lines = await start(
        "--gpu-memory-utilization", "0.95", "--startup-delay-s", "0.2", "--max-num-seqs", "4"
    )
    try:
        assert any("ignoring vLLM flags" in line and "0.95" in line for line in lines)
        async with aiohttp.ClientSession(base_url=url) as session:
            async with asyncio.timeout(10):
                while True:
                    async with session.get("/health") as resp:
                        if resp.status == 200:
                            break
                    await asyncio.sleep(0.05)
            body = {"prompt": "x", "max_tokens": 5000, "stream": True}
            async with session.post("/v1/completions", json=body) as resp:
                first = await resp.content.readline()
                assert first.startswith(b"data: {")
                proc.send_signal(signal.SIGTERM)
                rest = (await resp.content.read()).decode()
        events = [line.removeprefix("data: ") for line in rest.splitlines() if line]
        assert "[DONE]" not in events
        assert json.loads(events[-1])["error"]["type"] == "AbortError"
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_an_invalid_command_line_exits_2_without_serving() -> None:
    proc = await asyncio.create_subprocess_exec(
        *COMMAND, "m", "--max-model-len", "999999999", stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert b"exceeds the KV cache capacity" in err
