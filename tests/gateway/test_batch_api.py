"""The Batch API with the official `openai` client, against SQLite and a real PostgreSQL server:
every endpoint, every status transition, and bad input answered naming what is wrong."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import openai
import pytest

from chiron_operator.core.enums import Role
from chiron_operator.gateway.config import BatchCapacity, PodInfo
from chiron_operator.routing import RoutingTuning
from tests.gateway.batchkit import (
    ENDPOINT,
    client,
    input_file,
    lines_of,
    request_line,
    submit,
    wait_status,
)
from tests.gateway.gatekit import MODEL, PodSpec, RunningGateway, gateway, pods, until

FAST = ("--time-scale", "20")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/batches.db"
    url: str = request.getfixturevalue("pg_database_url")
    return url


@asynccontextmanager
async def batch_gateway(
    store_url: str, endpoints: list[PodInfo], **config: object
) -> AsyncIterator[RunningGateway]:
    settings = {"store_url": store_url, "batch_poll_s": 0.05, "min_batch_window_s": 1.0}
    async with gateway(endpoints, **{**settings, **config}) as gw:
        yield gw


async def test_files_round_trip_list_and_delete(store_url: str) -> None:
    async with pods(PodSpec(Role.BATCH, 8)) as p, batch_gateway(store_url, p.infos) as gw:
        api = client(gw.url)
        content = input_file(3)
        first = await api.files.create(file=("a.jsonl", content), purpose="batch")
        second = await api.files.create(file=("b.jsonl", content), purpose="batch")
        assert (first.purpose, first.bytes, first.filename) == ("batch", len(content), "a.jsonl")
        assert (await api.files.retrieve(first.id)).id == first.id
        assert (await api.files.content(first.id)).content == content
        listed = [f.id async for f in api.files.list(purpose="batch")]
        assert listed == [second.id, first.id]  # newest first
        deleted = await api.files.delete(first.id)
        assert deleted.deleted and deleted.id == first.id
        with pytest.raises(openai.NotFoundError):
            await api.files.retrieve(first.id)
        with pytest.raises(openai.NotFoundError):
            await api.files.delete(first.id)


async def test_bad_files_are_refused_naming_the_line(store_url: str) -> None:
    async with (
        pods(PodSpec(Role.BATCH, 8)) as p,
        batch_gateway(store_url, p.infos, max_file_bytes=4096) as gw,
    ):
        api = client(gw.url)
        malformed = (request_line("a") + "\n{not json\n").encode()
        with pytest.raises(openai.BadRequestError, match="line 2: not valid JSON"):
            await api.files.create(file=("x.jsonl", malformed), purpose="batch")
        duplicate = (request_line("a") + "\n" + request_line("a") + "\n").encode()
        with pytest.raises(openai.BadRequestError, match="line 2: custom_id 'a' is alr"):
            await api.files.create(file=("x.jsonl", duplicate), purpose="batch")
        wrong_url = request_line("a").replace(ENDPOINT, "/v1/embeddings").encode()
        with pytest.raises(openai.BadRequestError, match="line 1: url must be"):
            await api.files.create(file=("x.jsonl", wrong_url), purpose="batch")
        with pytest.raises(openai.APIStatusError, match="over the limit of 4096") as big:
            await api.files.create(file=("x.jsonl", input_file(200)), purpose="batch")
        assert big.value.status_code == 413
        with pytest.raises(openai.BadRequestError, match="purpose must be 'batch'"):
            await api.files.create(file=("x.jsonl", input_file(1)), purpose="assistants")
        assert [f async for f in api.files.list()] == []  # nothing was stored


async def test_a_batch_runs_to_completed_with_one_line_per_request(store_url: str) -> None:
    async with (
        pods(PodSpec(Role.BATCH, 4, FAST), PodSpec(Role.MIXED, 4, FAST)) as p,
        batch_gateway(store_url, p.infos) as gw,
    ):
        api = client(gw.url)
        input_id, batch = await submit(api, input_file(40), "30m", metadata={"team": "a"})
        assert batch.status == "validating"
        assert batch.expires_at == batch.created_at + 1800  # the window is the deadline
        assert batch.metadata == {"team": "a"}
        done = await wait_status(api, batch.id, {"completed"})
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed) == (40, 40)
        assert done.request_counts.failed == 0 and done.error_file_id is None
        for stamp in (done.in_progress_at, done.finalizing_at, done.completed_at):
            assert stamp is not None and done.created_at <= stamp <= done.expires_at
        lines = await lines_of(api, done.output_file_id)
        assert sorted(x["custom_id"] for x in lines) == sorted(f"req-{i}" for i in range(40))
        first = lines[0]
        assert first["error"] is None and first["response"]["status_code"] == 200
        assert first["response"]["body"]["usage"]["completion_tokens"] == 4
        assert done.input_file_id == input_id
        with pytest.raises(openai.ConflictError, match="completed: it can no longer be"):
            await api.batches.cancel(batch.id)
        metrics = await gw.metrics()
        assert "chiron_gateway_batch_output_tokens_count 40.0" in metrics
        assert "chiron_gateway_batch_output_tokens_squares_total 640.0" in metrics


async def test_batches_list_newest_first_in_pages(store_url: str) -> None:
    async with pods(PodSpec(Role.BATCH, 8, FAST)) as p, batch_gateway(store_url, p.infos) as gw:
        api = client(gw.url)
        made = [(await submit(api, input_file(1)))[1].id for _ in range(5)]
        page = await api.batches.list(limit=2)
        assert [b.id for b in page.data] == made[::-1][:2] and page.has_more
        every = [b.id async for b in api.batches.list(limit=2)]
        assert every == made[::-1]
        with pytest.raises(openai.NotFoundError):
            await api.batches.retrieve("batch_missing")


async def test_bad_batches_are_refused_or_fail_validation_naming_the_line(store_url: str) -> None:
    async with pods(PodSpec(Role.BATCH, 8, FAST)) as p, batch_gateway(store_url, p.infos) as gw:
        api = client(gw.url)
        uploaded = await api.files.create(file=("x.jsonl", input_file(2)), purpose="batch")
        for field, kwargs in (
            ("endpoint", {"endpoint": "/v1/embeddings", "completion_window": "1h"}),
            ("completion_window", {"endpoint": ENDPOINT, "completion_window": "soon"}),
        ):
            with pytest.raises(openai.BadRequestError) as refused:
                await api.batches.create(input_file_id=uploaded.id, **kwargs)  # type: ignore[arg-type]
            assert refused.value.param == field  # type: ignore[attr-defined]
        with pytest.raises(openai.BadRequestError, match="no file"):
            await api.batches.create(
                input_file_id="file-missing", endpoint=ENDPOINT, completion_window="1h"
            )
        unknown = (request_line("a") + "\n" + request_line("b", model="nope") + "\n").encode()
        _, batch = await submit(api, unknown)
        failed = await wait_status(api, batch.id, {"failed"})
        assert failed.errors is not None and failed.errors.data
        error = failed.errors.data[0]
        assert (error.line, error.code, error.param) == (2, "model_not_found", "body.model")
        assert failed.failed_at is not None and failed.output_file_id is None


async def test_cancel_keeps_what_ran_and_answers_every_request_once(store_url: str) -> None:
    slow = ("--time-scale", "0.5")
    async with pods(PodSpec(Role.BATCH, 2, slow)) as p, batch_gateway(store_url, p.infos) as gw:
        api = client(gw.url)
        _, batch = await submit(api, input_file(30, max_tokens=16))
        await wait_status(api, batch.id, {"in_progress"})
        cancelling = await api.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled")
        done = await wait_status(api, batch.id, {"cancelled"})
        assert done.cancelling_at is not None and done.cancelled_at is not None
        output = await lines_of(api, done.output_file_id)
        errors = await lines_of(api, done.error_file_id)
        ids = [x["custom_id"] for x in output + errors]
        assert sorted(ids) == sorted(f"req-{i}" for i in range(30))
        assert errors and all(x["error"]["code"] == "batch_cancelled" for x in errors)
        assert (await api.batches.cancel(batch.id)).status == "cancelled"  # idempotent


async def test_an_expired_batch_keeps_its_results(store_url: str) -> None:
    slow = ("--time-scale", "0.5")
    async with pods(PodSpec(Role.BATCH, 2, slow)) as p, batch_gateway(store_url, p.infos) as gw:
        api = client(gw.url)
        _, batch = await submit(api, input_file(40, max_tokens=16), "3s")
        done = await wait_status(api, batch.id, {"expired"}, timeout_s=20)
        assert done.expired_at is not None and done.expired_at >= batch.expires_at
        output = await lines_of(api, done.output_file_id)
        errors = await lines_of(api, done.error_file_id)
        assert output, "requests that ran before the window ended keep their results"
        assert {x["error"]["code"] for x in errors} == {"batch_expired"}
        assert len(output) + len(errors) == 40
        assert done.request_counts is not None
        assert done.request_counts.completed == len(output)
        assert done.request_counts.failed == len(errors)


async def test_a_pod_that_never_answers_sends_requests_to_the_error_file(store_url: str) -> None:
    dead = PodInfo("batch-dead", Role.BATCH, "http://127.0.0.1:9", 4)
    config = {"batch_max_attempts": 2, "batch_backoff_s": 0.05, "eject_s": 0.05}
    async with batch_gateway(store_url, [dead], **config) as gw:
        api = client(gw.url)
        _, batch = await submit(api, input_file(3))
        done = await wait_status(api, batch.id, {"completed"})
        errors = await lines_of(api, done.error_file_id)
        assert sorted(x["custom_id"] for x in errors) == ["req-0", "req-1", "req-2"]
        assert all("gave up after 2 attempts" in x["error"]["message"] for x in errors)
        assert done.output_file_id is None


async def test_a_window_the_pool_cannot_meet_is_warned_in_metadata(store_url: str) -> None:
    capacity = BatchCapacity(100.0, "2 batch instances at 50 tokens/s each")
    async with (
        pods(PodSpec(Role.BATCH, 8, FAST)) as p,
        batch_gateway(store_url, p.infos, batch_capacity=capacity) as gw,
    ):
        api = client(gw.url)
        # 1,000 requests of 64 tokens in 60 s need ~1,067 tokens/s: ten times too much.
        _, late = await submit(api, input_file(1000, max_tokens=64), "60s")
        assert late.metadata is not None
        assert "it will likely expire" in late.metadata["chiron_warning"]
        assert "2 batch instances at 50 tokens/s" in late.metadata["chiron_warning"]
        _, fine = await submit(api, input_file(10, max_tokens=64), "1h")
        assert not (fine.metadata or {}).get("chiron_warning")
        await api.batches.cancel(late.id)


async def test_batch_class_requests_join_the_same_queue_as_groups_of_one(store_url: str) -> None:
    async with pods(PodSpec(Role.BATCH, 2, FAST)) as p, batch_gateway(store_url, p.infos) as gw:
        api = client(gw.url)
        _, batch = await submit(api, input_file(20, max_tokens=8))
        answer = await api.completions.create(
            model="tiny",
            prompt="hi",
            max_tokens=3,
            extra_headers={"x-chiron-class": "batch", "x-chiron-deadline": "10m"},
        )
        assert answer.usage is not None and answer.usage.completion_tokens == 3
        await wait_status(api, batch.id, {"completed"})
        metrics = await gw.metrics()
        assert "chiron_gateway_batch_output_tokens_count 21.0" in metrics
        assert json.loads(json.dumps(answer.model_dump()))["object"] == "text_completion"


async def test_requests_on_a_lost_pod_go_back_to_their_place(store_url: str) -> None:
    slow = ("--time-scale", "0.5")
    specs = (PodSpec(Role.BATCH, 4, slow), PodSpec(Role.BATCH, 4, FAST))
    async with pods(*specs) as p, batch_gateway(store_url, p.infos, batch_max_attempts=1) as gw:
        api = client(gw.url)
        _, batch = await submit(api, input_file(24, max_tokens=16))
        router = gw.gateway.dispatcher.router

        async def lost_pod_busy() -> bool:
            return router.pods["batch-0"].in_flight > 0

        await until(lost_pod_busy, "requests in flight on the pod about to be lost", 20.0)
        # The pod goes away (scaled in, evicted): discovery drops it, its connections break.
        gw.gateway.dispatcher.remove_pod("batch-0")
        await p.running["batch-0"].server.stop()
        done = await wait_status(api, batch.id, {"completed"})
        # One attempt allowed: a lost pod must not spend it, or these would be error lines.
        assert await lines_of(api, done.error_file_id) == []
        output = await lines_of(api, done.output_file_id)
        assert sorted(x["custom_id"] for x in output) == sorted(f"req-{i}" for i in range(24))
        assert 'chiron_gateway_requests_total{class="batch",outcome="requeued"}' in (
            await gw.metrics()
        )


async def test_streamed_batch_answers_are_the_whole_bodies_vllm_returns(store_url: str) -> None:
    """The gateway streams batch requests (to see their first token) and writes the body the
    pod answers the same request unstreamed: same choices, same usage."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    line = {"custom_id": "chat-0", "method": "POST", "url": "/v1/chat/completions", "body": body}
    async with (
        pods(PodSpec(Role.MIXED, 4, FAST)) as p,
        batch_gateway(store_url, p.infos) as gw,
    ):
        api = client(gw.url)
        uploaded = await api.files.create(
            file=("chat.jsonl", (json.dumps(line) + "\n").encode()), purpose="batch"
        )
        batch = await api.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = await wait_status(api, batch.id, {"completed"})
        (answer,) = await lines_of(api, done.output_file_id)
        async with gw.session.post(p.infos[0].url + "/v1/chat/completions", json=body) as direct:
            whole = await direct.json()
    streamed = answer["response"]["body"]
    assert streamed["object"] == "chat.completion"
    assert streamed["id"].startswith("chatcmpl-")
    for key in ("id", "created"):
        streamed.pop(key)
        whole.pop(key)
    assert streamed == whole
    assert whole["usage"]["completion_tokens"] == 5


async def test_a_mixed_pod_takes_batch_work_one_prefill_at_a_time(store_url: str) -> None:
    """With `batch_prefills_per_pod` 1, a mixed pod with room holds one batch request before its
    first token: the rest wait in the gateway's queue until that token streams back."""
    tuning = RoutingTuning(batch_prefills_per_pod=1)
    long_prompt = " ".join(["hello"] * 3000)  # a prefill long enough to be seen
    lines = (request_line(f"long-{i}", max_tokens=3, prompt=long_prompt) for i in range(6))
    async with (
        pods(PodSpec(Role.MIXED, 8)) as p,
        batch_gateway(store_url, p.infos, tuning=tuning) as gw,
    ):
        api = client(gw.url)
        _, batch = await submit(api, ("\n".join(lines) + "\n").encode(), "1h")
        router = gw.gateway.dispatcher.router
        pod = router.pods[p.infos[0].name]
        seen: list[tuple[int, int, int]] = []

        async def paced() -> bool:
            seen.append((pod.batch_prefilling, pod.in_flight, len(router.batch)))
            return (
                pod.batch_prefilling == 1 and pod.in_flight < pod.cap_seqs and len(router.batch) > 0
            )

        await until(paced, "one batch prefill on the mixed pod, the rest queued beside its room")
        done = await wait_status(api, batch.id, {"completed"})
        assert done.request_counts is not None and done.request_counts.completed == 6
    assert max(prefilling for prefilling, _, _ in seen) <= 1
