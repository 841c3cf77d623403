"""Optional: the emulator side by side with a real vLLM (docs/TESTING.md, "Real vLLM on the CPU").

Runs only when CHIRON_REAL_VLLM_URL points at a running vLLM, e.g. one started with
`vllm serve PATH --host 127.0.0.1 --max-num-seqs 8 --max-model-len 256`; set
CHIRON_REAL_VLLM_MAX_NUM_SEQS when its cap is not 8. vLLM is far too heavy to install for the
default suite; the vendored scrapes in data/ cover the metric names there.
"""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from tests.emulator.emukit import (
    OPERATOR_FAMILIES,
    Client,
    buckets,
    families,
    label_names,
    running,
    sample_gauges,
)

REAL_URL = os.environ.get("CHIRON_REAL_VLLM_URL", "")
REAL_CAP = int(os.environ.get("CHIRON_REAL_VLLM_MAX_NUM_SEQS", "8"))
GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")

pytestmark = pytest.mark.skipif(
    not REAL_URL, reason="set CHIRON_REAL_VLLM_URL to a running real vLLM to compare against it"
)


async def model_card(client: Client) -> dict[str, object]:
    async with client.session.get("/v1/models") as resp:
        card: dict[str, object] = (await resp.json())["data"][0]
        return card


async def queueing(client: Client, cap: int) -> tuple[float, float]:
    """Peak running and waiting while 4 x cap requests of 64 tokens run."""
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_gauges(client, GAUGES, stop, every_s=0.02))
    results = await asyncio.gather(*(client.complete(max_tokens=64) for _ in range(4 * cap)))
    stop.set()
    seen = await sampler
    assert all(r.status == 200 for r in results)
    return max(seen[GAUGES[0]]), max(seen[GAUGES[1]])


async def test_emulator_matches_a_real_vllm() -> None:
    async with aiohttp.ClientSession(base_url=REAL_URL) as session:
        real = Client(session)
        card = await model_card(real)
        name, max_len = str(card["id"]), str(card["max_model_len"])
        real_running, real_waiting = await queueing(real, REAL_CAP)
        real_text = await real.metrics()
    flags = ("--served-model-name", name, "--max-model-len", max_len, "--time-scale", "4")
    async with running("--max-num-seqs", str(REAL_CAP), *flags) as emu:
        emu_running, emu_waiting = await queueing(emu.client, REAL_CAP)
        emu_text = await emu.client.metrics()
    theirs, ours = families(real_text), families(emu_text)
    for family in OPERATOR_FAMILIES:
        assert (ours[family].type, label_names(ours[family]), buckets(ours[family])) == (
            theirs[family].type,
            label_names(theirs[family]),
            buckets(theirs[family]),
        ), family
    assert real_running == emu_running == REAL_CAP
    assert real_waiting >= REAL_CAP and emu_waiting >= REAL_CAP
