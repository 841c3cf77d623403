"""Nothing accepted is lost and nothing is answered twice: a 2,000-request batch survives its
gateway killed with SIGKILL mid-batch (SQLite: killed twice and restarted; PostgreSQL: two
replicas sharing the store, the dispatching one killed, the other taking over)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from openai import OpenAI

from chiron_operator.devcluster.cluster.processes import free_port
from tests.gateway.batchkit import ENDPOINT, input_file

pytestmark = pytest.mark.slow

REQUESTS = 2000
BIN = Path(sys.executable).parent


@contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=2.0) as answer:
        found: dict[str, object] = json.loads(answer.read())
        return found


def wait_http(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2.0) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def emulators(stack: ExitStack, tmp: Path, count: int) -> list[str]:
    """Emulator pods as their own processes; their `--endpoint` flags."""
    flags = []
    for i in range(count):
        port = free_port()
        args = [str(BIN / "chiron-emulator"), "tiny", "--host", "127.0.0.1", "--port", str(port)]
        args += ["--max-num-seqs", "16", "--time-scale", "10", "--uvicorn-log-level", "warning"]
        stack.enter_context(process(args, tmp / f"pod-{i}.log"))
        wait_http(f"http://127.0.0.1:{port}/health")
        flags += ["--endpoint", f"batch=http://127.0.0.1:{port},max-num-seqs=16,name=batch-{i}"]
    return flags


def gateway_args(port: int, store: str, pods: list[str], replicas: int, index: int) -> list[str]:
    args = [str(BIN / "chiron-gateway"), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--store", store, "--replicas", str(replicas), "--replica-index", str(index)]
    return [*args, *pods, "--log-level", "warning"]


def completed(api: OpenAI, batch_id: str) -> int:
    counts = api.batches.retrieve(batch_id).request_counts
    return counts.completed if counts else 0


def until(check: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.1)


def submit(api: OpenAI) -> str:
    uploaded = api.files.create(
        file=("big.jsonl", input_file(REQUESTS, max_tokens=8)), purpose="batch"
    )
    batch = api.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="1h")
    return batch.id


def check_output(api: OpenAI, batch_id: str) -> None:
    until(lambda: api.batches.retrieve(batch_id).status == "completed", "the batch completes")
    batch = api.batches.retrieve(batch_id)
    assert batch.error_file_id is None, "no request failed"
    assert batch.output_file_id is not None
    text = api.files.content(batch.output_file_id).text
    ids = [json.loads(line)["custom_id"] for line in text.splitlines() if line]
    assert len(ids) == REQUESTS, f"{len(ids)} output lines"
    assert len(set(ids)) == REQUESTS, "a custom_id answered twice"
    assert batch.request_counts is not None and batch.request_counts.completed == REQUESTS


def test_sqlite_gateway_killed_twice_mid_batch_loses_and_repeats_nothing(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/batches.db"
    port = free_port()
    api = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
    with ExitStack() as stack:
        pods = emulators(stack, tmp_path, 2)
        args = gateway_args(port, store, pods, 1, 0)
        gateway = stack.enter_context(process(args, tmp_path / "gateway.log"))
        wait_http(f"http://127.0.0.1:{port}/health")
        batch_id = submit(api)
        for threshold in (REQUESTS // 5, REQUESTS // 2):
            until(lambda t=threshold: completed(api, batch_id) >= t, f"{threshold} completed")
            assert completed(api, batch_id) < REQUESTS, "killed mid-batch, not after it"
            os.kill(gateway.pid, signal.SIGKILL)
            gateway.wait(10)
            gateway = stack.enter_context(process(args, tmp_path / "gateway.log"))
            wait_http(f"http://127.0.0.1:{port}/health")
        check_output(api, batch_id)


def test_postgres_two_replicas_one_killed_loses_and_repeats_nothing(
    tmp_path: Path, pg_database_url: str
) -> None:
    ports = [free_port(), free_port()]
    apis = [
        OpenAI(base_url=f"http://127.0.0.1:{p}/v1", api_key="unused", max_retries=0) for p in ports
    ]
    with ExitStack() as stack:
        pods = emulators(stack, tmp_path, 2)
        gateways = []
        for i, port in enumerate(ports):
            args = gateway_args(port, pg_database_url, pods, 2, i)
            gateways.append(stack.enter_context(process(args, tmp_path / f"gateway-{i}.log")))
            wait_http(f"http://127.0.0.1:{port}/health")
        batch_id = submit(apis[1])  # submitted to either replica; one of them dispatches
        until(lambda: completed(apis[0], batch_id) >= REQUESTS // 4, "a quarter completed")
        leaders = [get_json(f"http://127.0.0.1:{p}/health")["batchDispatcher"] for p in ports]
        assert sorted(leaders) == [False, True], "exactly one replica dispatches"
        dispatching = leaders.index(True)
        os.kill(gateways[dispatching].pid, signal.SIGKILL)
        survivor = apis[1 - dispatching]
        assert completed(survivor, batch_id) < REQUESTS, "killed mid-batch, not after it"
        check_output(survivor, batch_id)
