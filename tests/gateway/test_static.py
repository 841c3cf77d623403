"""The real gateway in front of emulator pods (static endpoints): routing, caps, yielding batch
work on vLLM as it is at the cap, refusals, retries, shared caps, and the OpenAI client."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from chiron_operator.core.enums import Role
from chiron_operator.gateway.config import PodInfo, Share
from chiron_operator.routing import RoutingTuning
from tests.emulator.emukit import fast_value, sample_value
from tests.gateway.gatekit import MODEL, PodSpec, gateway, pods, send, until, watch_max

pytestmark = pytest.mark.timeout(60)


def counted(text: str, request_class: str, outcome: str) -> float:
    try:
        return sample_value(
            text, "chiron_gateway_requests_total", **{"class": request_class, "outcome": outcome}
        )
    except KeyError:
        return 0.0


async def test_interactive_fills_interactive_pods_then_overflows_to_mixed() -> None:
    specs = (PodSpec(Role.INTERACTIVE, 2), PodSpec(Role.MIXED, 2))
    async with pods(*specs) as p, gateway(p.infos) as gw:
        calls = [asyncio.create_task(send(gw, max_tokens=80, stream=True)) for _ in range(3)]
        expected = {"interactive-0": 2.0, "mixed-1": 1.0}

        async def spread() -> bool:
            return await p.sum_of("vllm:num_requests_running") == expected

        await until(spread, f"running {expected}")
        answers = await asyncio.gather(*calls)
        assert [a.status for a in answers] == [200, 200, 200]
        text = await gw.metrics()
        assert counted(text, "interactive", "routed") == 2
        assert counted(text, "interactive", "overflowed_to_mixed") == 1


async def test_no_pod_ever_runs_more_than_its_cap() -> None:
    specs = (PodSpec(Role.INTERACTIVE, 2), PodSpec(Role.MIXED, 2), PodSpec(Role.BATCH, 3))
    async with pods(*specs) as p, gateway(p.infos) as gw:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_max(p, stop))
        calls = [send(gw, max_tokens=12, stream=i % 2 == 0) for i in range(14)]
        calls += [send(gw, max_tokens=12, batch=True) for _ in range(14)]
        answers = await asyncio.gather(*calls)
        stop.set()
        most = await watcher
        assert {a.status for a in answers} == {200}
        assert most == {"interactive-0": 2.0, "mixed-1": 2.0, "batch-2": 3.0}
        # Nothing waited inside vLLM: the gateway held the rest at the pool level.
        for name in p.running:
            assert await p.gauge(name, "vllm:num_requests_waiting") == 0.0


async def test_interactive_cuts_off_batch_work_on_a_full_mixed_pod() -> None:
    """vLLM 0.32 would make it wait for a batch request to finish (issue 40004); the gateway
    cuts off the newest batch request instead, and that request still completes."""
    async with pods(PodSpec(Role.MIXED, 2)) as p, gateway(p.infos) as gw:
        batch = [asyncio.create_task(send(gw, max_tokens=150, batch=True)) for _ in range(2)]

        async def full() -> bool:
            return await p.gauge("mixed-0") == 2.0

        await until(full, "two batch requests running on the mixed pod")
        interactive = await send(gw, max_tokens=5, stream=True)
        assert interactive.status == 200
        assert interactive.ttft_s < 0.5, interactive  # the pool's TTFT SLO is 2 s
        finished = await asyncio.gather(*batch)
        assert [a.status for a in finished] == [200, 200]
        assert all(json.loads(a.body)["usage"]["completion_tokens"] == 150 for a in finished)
        engine = await p.running["mixed-0"].client.metrics()
        assert fast_value(engine, "vllm:num_preemptions_total") == 0.0  # vLLM preempted nothing
        assert sample_value(engine, "vllm:request_success_total", finished_reason="abort") == 1
        text = await gw.metrics()
        preempted = sample_value(
            text, "chiron_gateway_batch_preemptions_total", target_pod="mixed-0"
        )
        assert preempted == 1
        assert counted(text, "batch", "completed") == 2


async def test_without_cut_offs_interactive_waits_for_batch_work() -> None:
    """The same load with cut-offs off: the interactive request waits its turn (the baseline
    the previous test improves on)."""
    tuning = RoutingTuning(preempt_batch=False)
    async with pods(PodSpec(Role.MIXED, 2)) as p, gateway(p.infos, tuning) as gw:
        batch = [asyncio.create_task(send(gw, max_tokens=150, batch=True)) for _ in range(2)]

        async def full() -> bool:
            return await p.gauge("mixed-0") == 2.0

        await until(full, "two batch requests running on the mixed pod")
        interactive = await send(gw, max_tokens=5, stream=True)
        await asyncio.gather(*batch)
        assert interactive.ttft_s > 0.5, interactive


async def test_batch_borrows_an_idle_interactive_pod_and_gives_its_slots_back() -> None:
    """With no batch or mixed pod, batch work runs on the interactive pod's spare slots, never
    its reserve; an interactive request finding the pod full cuts the newest lent request off,
    which still completes."""
    tuning = RoutingTuning(interactive_reserve_slots=1)
    async with pods(PodSpec(Role.INTERACTIVE, 3)) as p, gateway(p.infos, tuning) as gw:
        batch = [asyncio.create_task(send(gw, max_tokens=150, batch=True)) for _ in range(3)]

        async def lent() -> bool:
            return await p.gauge("interactive-0") == 2.0

        await until(lent, "two batch requests on the interactive pod, its reserve kept")
        first = asyncio.create_task(send(gw, max_tokens=150, stream=True))

        async def full() -> bool:
            return await p.gauge("interactive-0") == 3.0

        await until(full, "the interactive request in the reserved slot")
        second = await send(gw, max_tokens=5, stream=True)
        assert second.status == 200
        assert second.ttft_s < 0.5, second  # it cut a lent request off instead of waiting
        assert (await first).status == 200
        finished = await asyncio.gather(*batch)
        assert [a.status for a in finished] == [200] * 3
        assert all(json.loads(a.body)["usage"]["completion_tokens"] == 150 for a in finished)
        text = await gw.metrics()
        cut = sample_value(
            text, "chiron_gateway_batch_preemptions_total", target_pod="interactive-0"
        )
        assert cut == 1
        assert counted(text, "batch", "completed") == 3


async def test_an_interactive_pod_lends_nothing_when_lending_is_off() -> None:
    tuning = RoutingTuning(batch_on_interactive=False, interactive_reserve_slots=0)
    async with pods(PodSpec(Role.INTERACTIVE, 3)) as p, gateway(p.infos, tuning) as gw:
        batch = asyncio.create_task(send(gw, max_tokens=5, batch=True))
        answer = await send(gw, max_tokens=5, stream=True)
        assert answer.status == 200
        assert await p.gauge("interactive-0") == 0.0 and not batch.done()
        batch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await batch


async def test_refusals_say_why_in_the_openai_shape() -> None:
    tuning = RoutingTuning(max_queued_interactive=0)
    async with pods(PodSpec(Role.INTERACTIVE, 1), PodSpec(Role.BATCH, 1)) as p:
        async with gateway(p.infos, tuning) as gw:
            busy = asyncio.create_task(send(gw, max_tokens=60, stream=True))

            async def taken() -> bool:
                return await p.gauge("interactive-0") == 1.0

            await until(taken, "the interactive pod's one slot taken")
            refused = await send(gw)
            assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
            error = json.loads(refused.body)["error"]
            assert error["type"] == "rate_limit_exceeded" and "batch size" in error["message"]
            await busy
        async with gateway(p.infos[1:], tuning) as only_batch:
            unavailable = await send(only_batch)
            assert unavailable.status == 503
            assert "no interactive or mixed pod" in json.loads(unavailable.body)["error"]["message"]
            async with only_batch.session.post(
                only_batch.url + "/v1/completions", data=b"{not json"
            ) as answer:
                assert answer.status == 400
                assert "not valid JSON" in (await answer.json())["error"]["message"]
            async with only_batch.session.post(
                only_batch.url + "/v1/completions",
                json={"model": MODEL},
                headers={"x-chiron-class": "batch", "x-chiron-deadline": "soon"},
            ) as answer:
                assert answer.status == 400
                assert (await answer.json())["error"]["param"] == "x-chiron-deadline"


async def test_a_new_target_batch_size_applies_at_once_without_a_restart() -> None:
    async with pods(PodSpec(Role.INTERACTIVE, 4)) as p, gateway(p.infos) as gw:
        gw.gateway.dispatcher.set_targets({Role.INTERACTIVE: 1})
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_max(p, stop))
        await asyncio.gather(*(send(gw, max_tokens=20, stream=True) for _ in range(3)))
        stop.set()
        assert (await watcher)["interactive-0"] == 1.0
        gw.gateway.dispatcher.set_targets({Role.INTERACTIVE: 8})  # above --max-num-seqs: 4
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_max(p, stop))
        await asyncio.gather(*(send(gw, max_tokens=20, stream=True) for _ in range(6)))
        stop.set()
        assert (await watcher)["interactive-0"] == 4.0
        text = await gw.metrics()
        assert sample_value(text, "chiron_gateway_pod_cap_seqs", target_pod="interactive-0") == 4


async def test_two_gateway_replicas_together_keep_a_pod_within_its_cap() -> None:
    async with (
        pods(PodSpec(Role.INTERACTIVE, 3)) as p,
        gateway(p.infos, share=Share(2, 0)) as first,
        gateway(p.infos, share=Share(2, 1)) as second,
    ):
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_max(p, stop))
        calls = [send(gw, max_tokens=20, stream=True) for gw in (first, second) * 4]
        answers = await asyncio.gather(*calls)
        stop.set()
        assert {a.status for a in answers} == {200}
        assert (await watcher)["interactive-0"] <= 3.0
        caps = [
            sample_value(await gw.metrics(), "chiron_gateway_pod_cap_seqs")
            for gw in (first, second)
        ]
        assert sorted(caps) == [1.0, 2.0]


async def test_a_pod_that_refuses_connections_is_retried_on_another() -> None:
    async with pods(PodSpec(Role.INTERACTIVE, 4)) as p:
        dead = PodInfo("dead", Role.INTERACTIVE, "http://127.0.0.1:9", 4)
        async with gateway([dead, *p.infos]) as gw:
            answers = await asyncio.gather(*(send(gw, max_tokens=4) for _ in range(4)))
            assert {a.status for a in answers} == {200}
            assert counted(await gw.metrics(), "interactive", "retried") >= 1


async def test_a_batch_request_whose_pod_dies_completes_on_another() -> None:
    async with pods(PodSpec(Role.BATCH, 2), PodSpec(Role.BATCH, 2)) as p, gateway(p.infos) as gw:
        calls = [asyncio.create_task(send(gw, max_tokens=100, batch=True)) for _ in range(2)]

        async def spread() -> bool:
            return await p.gauge("batch-0") == 1.0 and await p.gauge("batch-1") == 1.0

        await until(spread, "one batch request on each pod")
        await p.running["batch-0"].server.stop()
        answers = await asyncio.gather(*calls)
        assert [a.status for a in answers] == [200, 200]
        assert await p.gauge("batch-1") == 0.0
        assert (
            sample_value(
                await p.running["batch-1"].client.metrics(),
                "vllm:request_success_total",
                finished_reason="length",
            )
            == 2.0
        )


async def test_the_openai_client_talks_to_the_gateway() -> None:
    async with pods(PodSpec(Role.INTERACTIVE, 1)) as p:
        tuning = RoutingTuning(max_queued_interactive=0)
        async with gateway(p.infos, tuning) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="none", max_retries=0)
            chat = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            assert chat.usage is not None and chat.usage.completion_tokens == 4
            models = await client.models.list()
            assert [m.id for m in models.data] == [MODEL]
            stream = await client.completions.create(
                model=MODEL, prompt="hi", max_tokens=60, stream=True
            )
            with pytest.raises(openai.RateLimitError, match="batch size"):
                await client.completions.create(model=MODEL, prompt="hi", max_tokens=2)
            texts = [chunk.choices[0].text async for chunk in stream]
            assert len(texts) == 60
            await client.close()
