"""`make bench-batch`'s code path on a tiny setting, so it cannot rot: a real gateway process on
SQLite and on PostgreSQL (the session's test server), 500 requests queued, two batches of 600
dispatched with a direct run before each; then the shape of the document and the JSON. The
figures themselves are not checked (a shared CI machine decides them); `make bench-batch`
measures them."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion

from chiron_operator.perf import batch
from chiron_operator.perf.batch_load import input_lines
from chiron_operator.perf.batch_queue import QueueMemory
from chiron_operator.perf.batch_report import render
from chiron_operator.perf.batch_results import BatchRound, Direct, Dispatch, Intake, Results
from chiron_operator.perf.batch_upstream import chat_answer, completion_answer

pytestmark = pytest.mark.timeout(180)

INTAKE = 500
DISPATCH = 600
ROUNDS = 2
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> tuple[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "BATCH_PERFORMANCE.md"
    data = out.parent / "benchmarks" / "batch.json"
    args = ["--out", str(out), "--json", str(data), "--no-progress"]
    args += ["--intake-requests", str(INTAKE), "--dispatch-requests", str(DISPATCH)]
    args += ["--rounds", str(ROUNDS)]
    assert batch.main([*args, "--postgres-url", postgres_url]) == 0
    return out.read_text(), json.loads(data.read_text())


def test_the_document_has_its_sections_and_verdicts(run: tuple[str, dict[str, Any]]) -> None:
    doc, _ = run
    headings = [line for line in doc.splitlines() if line.startswith("#")]
    assert headings == [
        "# Batch API performance",
        "## Summary",
        f"## Intake: {INTAKE:,} requests accepted and queued",
        "## Dispatch overhead per request",
    ]
    text = " ".join(doc.split())  # the prose is wrapped anywhere
    for store in ("SQLite", "PostgreSQL"):
        intake = rf"Intake \({store}\): a 500-request input file .*? \*\*\d+\.\d\d s\*\*"
        assert re.search(intake, text)
        assert re.search(rf"Dispatch \({store}\): \*\*[\d,]+ requests/s\*\*", text)
    # The goals are for 50,000 requests: a tiny run does not claim to meet them.
    assert "not judged at 500" in text and "met," not in text
    assert "Every request was answered, and answered once" in text
    assert all(len(line) <= 100 for line in doc.splitlines() if not line.startswith("|"))


def test_the_json_counts_every_request_on_both_stores(run: tuple[str, dict[str, Any]]) -> None:
    _, data = run
    assert [i["store"] for i in data["intakes"]] == ["SQLite", "PostgreSQL"]
    for intake in data["intakes"]:
        assert intake["requests"] == intake["queue"]["requests"] == INTAKE
        assert 0 < intake["upload_s"] < intake["total_s"]
        assert 0 < intake["rss_idle_bytes"] <= intake["peak_rss_bytes"]
        assert intake["peak_after_upload_bytes"] <= intake["peak_rss_bytes"]
        assert intake["queue_bytes_per_request"] > 0 and intake["cpu_s"] > 0
    direct = data["direct"]
    # A direct run before each batch, on each store's upstream.
    assert len(direct["rounds"]) == 2 * ROUNDS and direct["failed"] == 0
    assert direct["requests"] == 2 * ROUNDS * DISPATCH and direct["per_s"] > 0
    assert [x["store"] for x in data["dispatches"]] == ["SQLite", "PostgreSQL"]
    for x in data["dispatches"]:
        assert [r["completed"] for r in x["rounds"]] == [DISPATCH] * ROUNDS
        assert x["requests"] == x["completed"] == ROUNDS * DISPATCH and x["failed"] == 0
        assert 0 < x["window_requests"] <= ROUNDS * DISPATCH and x["per_s"] > 0
        assert x["us_per_request"] > 0 and x["store_calls_requests"] == DISPATCH
        assert x["store_us_per_request"] > 0
        assert x["window_loop_cpu_s"] <= x["window_cpu_s"]


def _results(total_s: float, peak_mib: float) -> Results:
    setup = replace(batch.setup_of(batch.Settings(), input_lines(10, "bench")), cores=2)
    queue = QueueMemory(50_000, 50_000 * 900, 80 * MIB)
    intake = Intake(
        "SQLite", 50_000, 21 * MIB, 1.0, 0.01, 1.0, total_s - 2.01, total_s, 76 * MIB,
        200 * MIB, 150 * MIB, int(peak_mib * MIB), 3.0, 1.0, queue,
    )  # fmt: skip
    direct = Direct(20_000, 0, 2.0, 2.0, 1.0, 3.0)
    batch_round = BatchRound(20_000, 20_000, 0, 12.0, 10.0, 10.0, 19_000, 9.5, 6.0, 12.0, 0.5, 3.0)
    dispatch = Dispatch("SQLite", (batch_round, batch_round), 20_000, 1.0)
    return Results(setup, (intake,), (direct, direct), (dispatch,), 60.0)


def test_a_missed_goal_is_called_missed() -> None:
    met = " ".join(render(_results(total_s=2.9, peak_mib=201.6)).split())
    assert "goal < 30 s: met, 27.1 s under it" in met
    assert "goal < 300 MiB: met, 98.4 MiB under it" in met
    missed = " ".join(render(_results(total_s=41.5, peak_mib=350.0)).split())
    assert "goal < 30 s: **missed** by 11.5 s" in missed
    assert "goal < 300 MiB: **missed** by 50.0 MiB" in missed
    # 19,000 requests in the 10 s steady span against 20,000 in 2 s direct.
    assert "**1,900 requests/s** through the Batch API (2 batches; rounds 1,900 to 1,900)" in missed
    assert "against **10,000/s** straight to the same upstream" in missed
    assert "Other load" not in missed


def test_other_load_on_the_machine_is_called_out() -> None:
    quiet = _results(total_s=2.9, peak_mib=201.6)
    # 5 CPU-seconds busy in 2 s, of which the client and the upstream spent 3: 1 core of others.
    busy = Direct(20_000, 0, 2.0, 2.0, 1.0, 5.0)
    doc = " ".join(render(replace(quiet, directs=(busy, busy))).split())
    assert "Other load kept up to 1.00 of the 2 cores busy" in doc


def test_the_input_file_is_realistic_and_the_same_every_run() -> None:
    lines = input_lines(2000, "bench")
    assert lines == input_lines(2000, "bench")
    assert len({json.loads(line)["custom_id"] for line in lines}) == len(lines)
    sizes = [len(line.encode()) for line in lines]
    assert min(sizes) >= 300 and max(sizes) <= 500


def test_the_upstream_answers_what_openai_clients_parse() -> None:
    chat = ChatCompletion.model_validate_json(chat_answer("bench"))
    text = Completion.model_validate_json(completion_answer("bench"))
    assert chat.usage is not None and text.usage is not None
    assert chat.usage.completion_tokens == text.usage.completion_tokens > 0
