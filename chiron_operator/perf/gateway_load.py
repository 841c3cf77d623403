"""The gateway benchmark's load generator: streamed completions over aiohttp, on loopback.

- Open loop (`open_loop`): requests start at Poisson arrival times fixed in advance, whatever
  the answers do, so a slow server cannot slow the offered load down (a closed loop would hide
  latency by sending less). The same arrival times drive the direct and the gateway runs. Each
  request records how late it was sent against its schedule (the generator's own lag) and its
  time to first token from that send.
- Closed loop (`closed_loop`): a fixed number of long streams, each followed at once by the
  next, for the relay throughput; it counts the server-sent events received.

Both are bounded: a run sends at most its schedule (or stops starting streams at its end) and
gives every request `timeout_s`.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import aiohttp

PATH: Final = "/v1/completions"
HEADERS: Final = {"Content-Type": "application/json"}
# About 256 prompt tokens by the emulator's 4-characters-per-token estimate: a body the gateway
# has to parse and re-encode, as it does for a real prompt.
PROMPT: Final = ("A short question about serving large language models. " * 19)[:1024]


def body(model: str, max_tokens: int) -> bytes:
    """A streamed completion request of `max_tokens` tokens."""
    request = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "stream": True}
    return json.dumps(request).encode()


def poisson_offsets(rate: float, duration_s: float, seed: int) -> list[float]:
    """Arrival times (seconds from the start) of a Poisson process at `rate` over `duration_s`."""
    rng = random.Random(seed)
    offsets: list[float] = []
    now = rng.expovariate(rate)
    while now < duration_s:
        offsets.append(now)
        now += rng.expovariate(rate)
    return offsets


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request as its client saw it (times in seconds)."""

    lag_s: float  # sent this late against its schedule
    ttft_s: float  # from its send to the first byte of the body (nan: no byte came)
    events: int  # server-sent events received, `data: [DONE]` included
    reads: int  # reads that delivered them (events per read > 1: they arrived coalesced)
    ok: bool  # status 200 and every event expected


@dataclass
class Gauge:
    """Requests in flight now and the most ever at once."""

    now: int = 0
    most: int = 0

    def up(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def down(self) -> None:
        self.now -= 1


@dataclass(frozen=True, slots=True)
class Load:
    """What every request of a run sends and how long it may take."""

    session: aiohttp.ClientSession
    payload: bytes
    expected_events: int
    timeout_s: float


async def request(load: Load, url: str, scheduled_s: float, gauge: Gauge) -> Outcome:
    """One streamed request to `url`, timed from the moment it is sent."""
    loop = asyncio.get_running_loop()
    sent_s = loop.time()
    ttft_s, events, reads, status = math.nan, 0, 0, 0
    gauge.up()
    try:
        async with asyncio.timeout(load.timeout_s):
            async with load.session.post(url + PATH, data=load.payload, headers=HEADERS) as up:
                status = up.status
                async for chunk in up.content.iter_any():
                    if not reads:
                        ttft_s = loop.time() - sent_s
                    reads += 1
                    events += chunk.count(b"data: ")
    except (aiohttp.ClientError, TimeoutError, OSError):
        status = 0  # counted as failed: a benchmark reports errors, it does not stop on them
    finally:
        gauge.down()
    ok = status == 200 and events == load.expected_events
    return Outcome(sent_s - scheduled_s, ttft_s, events, reads, ok)


@dataclass
class OpenRun:
    """An open-loop run: every request's outcome, the span of its sends, the peak in flight."""

    outcomes: list[Outcome] = field(default_factory=list)
    first_sent_s: float = 0.0
    last_sent_s: float = 0.0
    most_in_flight: int = 0


async def open_loop(
    load: Load, urls: Sequence[str], offsets: Sequence[float], done: Callable[[], None]
) -> OpenRun:
    """Send one request at each offset (round robin over `urls`), wait for them all to end."""
    loop = asyncio.get_running_loop()
    start_s = loop.time() + 0.01
    gauge = Gauge()
    tasks: list[asyncio.Task[Outcome]] = []
    for i, offset in enumerate(offsets):
        delay_s = start_s + offset - loop.time()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        task = asyncio.create_task(request(load, urls[i % len(urls)], start_s + offset, gauge))
        task.add_done_callback(lambda _: done())
        tasks.append(task)
    outcomes = list(await asyncio.gather(*tasks))
    run = OpenRun(outcomes, most_in_flight=gauge.most)
    if outcomes:
        run.first_sent_s = start_s + offsets[0] + outcomes[0].lag_s
        run.last_sent_s = start_s + offsets[-1] + outcomes[-1].lag_s
    return run


@dataclass
class StreamRun:
    """A closed-loop run of long streams."""

    requests: int = 0
    failed: int = 0
    events: int = 0
    reads: int = 0
    wall_s: float = 0.0


async def closed_loop(
    load: Load, url: str, concurrency: int, duration_s: float, done: Callable[[int], None]
) -> StreamRun:
    """`concurrency` streams back to back until `duration_s` has passed; the last ones finish."""
    loop = asyncio.get_running_loop()
    started_s = loop.time()
    end_s = started_s + duration_s
    run, gauge = StreamRun(), Gauge()

    async def worker() -> None:
        while loop.time() < end_s:
            outcome = await request(load, url, loop.time(), gauge)
            run.requests += 1
            run.failed += not outcome.ok
            run.events += outcome.events
            run.reads += outcome.reads
            done(outcome.events)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.wall_s = loop.time() - started_s
    return run
