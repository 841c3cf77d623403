"""`make bench-gateway`'s code path on a tiny setting, so it cannot rot: real emulator pods and a
real gateway process, 20 requests/s for 2 s per path, two short streams; then the shape of the
document and the JSON. The figures themselves are not checked (a shared CI machine decides
them); `make bench-gateway` measures them."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest

from chiron_operator.perf import gateway
from chiron_operator.perf.gateway_load import poisson_offsets
from chiron_operator.perf.gateway_report import render
from chiron_operator.perf.gateway_results import PathResult, RateResult, Results, StreamResult

pytestmark = pytest.mark.timeout(60)

TOKENS = 20
TINY = [
    *("--rate", "20", "--duration-s", "2", "--rounds", "2", "--warmup-s", "0.2"),
    *("--streams", "2", "--stream-tokens", str(TOKENS), "--stream-duration-s", "1"),
    "--no-progress",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "GATEWAY_PERFORMANCE.md"
    data = out.parent / "benchmarks" / "gateway.json"
    assert gateway.main(["--out", str(out), "--json", str(data), *TINY]) == 0
    return out.read_text(), json.loads(data.read_text())


def test_the_document_has_its_sections_and_verdicts(run: tuple[str, dict[str, Any]]) -> None:
    doc, _ = run
    headings = [line for line in doc.splitlines() if line.startswith("#")]
    assert headings == [
        "# Gateway performance",
        "## Summary",
        "## Latency the gateway adds",
        "## Streamed chunks relayed per core",
    ]
    assert re.search(r"At 20 requests/s, the gateway added \*\*-?\d+\.\d\d ms\*\*", doc)
    assert "goal <= 2 ms" in doc and "goal <= 10 ms" in doc and "goal >= 50,000" in doc
    assert "No request waited for a pod's slot" in doc
    assert "The added latency of each round on its own ranged at 20 requests/s" in doc
    row = next(line for line in doc.splitlines() if line.startswith("| 20 | "))
    assert len(row.strip("|").split("|")) == 10
    assert all(len(line) <= 100 for line in doc.splitlines() if not line.startswith("|"))


def test_the_json_holds_both_paths_and_the_streams(run: tuple[str, dict[str, Any]]) -> None:
    _, data = run
    (rate,) = data["rates"]
    assert rate["rate"] == 20.0 and rate["gateway_queued"] == 0 and rate["gateway_refused"] == 0
    direct, via = rate["direct"], rate["gateway"]
    # The same arrival times on both paths: the same number of requests, all answered.
    assert direct["requests"] == via["requests"] > 10
    assert direct["failed"] == via["failed"] == 0
    assert 0 < direct["ttft_p50_ms"] <= direct["ttft_p99_ms"]
    assert rate["added_p50_ms"] == pytest.approx(via["ttft_p50_ms"] - direct["ttft_p50_ms"])
    assert len(rate["added_p50_ms_by_round"]) == len(rate["added_p99_ms_by_round"]) == 2
    (stream,) = data["streams"]
    assert stream["failed"] == 0 and stream["requests"] >= 2
    assert stream["events"] == stream["requests"] * (TOKENS + 1)  # every token, then [DONE]
    assert stream["gateway_cpu_s"] > 0 and data["chunks_per_core_s"] > 0


def test_a_rate_the_generator_could_not_send_is_called_so() -> None:
    path = PathResult("direct", 100, 0, 2.0, 5.0, 1.0, 30.0, 80.0, 610.0, 40, {})
    cores = {"gateway": 0.5, "pods": 0.6, "generator": 0.9, "others": 0.0}
    path = replace(path, cores=cores)
    rate = RateResult(1000.0, path, replace(path, path="gateway", ttft_p50_ms=3.0), 0, 0)
    stream = StreamResult(32, 10, 0, 5010, 5000, 1.0, 0.1, cores)
    setup = gateway.setup_of(gateway.Settings())
    doc = render(Results(setup, (rate,), (stream,), 60.0))
    assert "**not reached**: the generator sent only 610/s" in doc
    assert "Near saturation" in doc and "about 1,220 requests/s" in doc
    summary = doc.split("## Summary")[1].split("## Latency")[0]
    assert "**missed**" not in summary and "50,100" in summary


def test_the_arrivals_are_a_seeded_poisson_process() -> None:
    offsets = poisson_offsets(1000.0, 5.0, seed=3)
    assert offsets == poisson_offsets(1000.0, 5.0, seed=3)
    assert offsets == sorted(offsets) and offsets[0] > 0 and offsets[-1] < 5.0
    assert 4700 < len(offsets) < 5300
