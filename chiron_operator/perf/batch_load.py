"""The batch benchmark's load: a Batch API input file, and the same requests sent directly.

- `input_file`: chat-completion lines with distinct `custom_id`s and prompts of varied length
  made of sentences drawn from a seeded generator, so the file is the same on every run and
  its lines are 300 to 500 bytes, as short real prompts are.
- `direct`: those requests, as the gateway sends them upstream (`batch_upstream.
  upstream_payload`), posted by a plain aiohttp client on uvloop (as the gateway runs) with a
  fixed number in flight: the baseline the gateway's dispatch is compared with.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp
import uvloop

from chiron_operator.gateway.batch_upstream import upstream_payload

ENDPOINT: Final = "/v1/chat/completions"
MAX_TOKENS: Final = 128
SYSTEM: Final = "You are a careful assistant. Answer in plain English."
TASKS: Final = (
    "Summarise this support ticket in two sentences and suggest a next step.",
    "Classify the sentiment of this product review as positive, neutral or negative.",
    "Translate the following note into French, keeping its tone.",
    "Extract every date and amount mentioned below as a JSON list.",
    "Write a one-line title for this paragraph.",
)
SENTENCES: Final = (
    "The order arrived two days late and the box was damaged.",
    "Our team moved the nightly job to a larger machine last week.",
    "The invoice of 14 March lists 3 licences instead of 5.",
    "Customers in the north region report slow page loads after 6 pm.",
    "The new onboarding flow cut the time to first login by half.",
    "Please confirm whether the refund of 42 euros has been issued.",
    "The meeting about the roadmap moved to Thursday at 10 am.",
    "Battery life dropped noticeably after the latest firmware update.",
    "The warehouse in Lyon will close for inventory on 2 June.",
    "Two of the five test runs failed with a timeout on the same step.",
    "I love the screen, but the speakers are quieter than I expected.",
    "The contract renews automatically unless cancelled 30 days ahead.",
)
PROMPT_CHARS: Final = (60, 230)  # with the line's other fields: 300 to 500 bytes a line


def _prompt(rng: random.Random) -> str:
    target = rng.randint(*PROMPT_CHARS)
    parts = [rng.choice(TASKS)]
    while sum(len(p) + 1 for p in parts) < target:
        parts.append(rng.choice(SENTENCES))
    return " ".join(parts)[: PROMPT_CHARS[1]]


def input_lines(count: int, model: str, seed: int = 1) -> list[str]:
    """`count` Batch API lines for `ENDPOINT`, `custom_id`s `request-1` onwards."""
    rng = random.Random(seed)
    lines = []
    for i in range(1, count + 1):
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": _prompt(rng)},
        ]
        body = {"model": model, "messages": messages, "max_tokens": MAX_TOKENS}
        line = {"custom_id": f"request-{i}", "method": "POST", "url": ENDPOINT, "body": body}
        lines.append(json.dumps(line))
    return lines


def input_file(lines: Sequence[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def payloads(lines: Sequence[str]) -> list[bytes]:
    """Each line's request exactly as the gateway sends it upstream."""
    return [upstream_payload(json.dumps(json.loads(line)["body"])) for line in lines]


@dataclass(frozen=True, slots=True)
class DirectRun:
    """Requests posted straight to the upstream."""

    requests: int
    failed: int
    wall_s: float


async def _direct(url: str, bodies: Sequence[bytes], concurrency: int) -> DirectRun:
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    queue = iter(bodies)
    failed = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal failed
            for body in queue:  # the workers share one iterator: each body is sent once
                try:
                    async with session.post(url + ENDPOINT, data=body, headers=headers) as answer:
                        # Parsed as the gateway parses it, for its usage and the output file.
                        json.loads(await answer.read())
                        failed += answer.status != 200
                except (aiohttp.ClientError, ValueError):
                    failed += 1

        started_s = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall_s = time.monotonic() - started_s
    return DirectRun(len(bodies), failed, wall_s)


def direct(url: str, bodies: Sequence[bytes], concurrency: int) -> DirectRun:
    """Post every body to `url`'s `ENDPOINT`, `concurrency` at a time, reading each answer."""
    return uvloop.run(_direct(url, bodies, concurrency))
