"""/metrics is true to a real vLLM scrape: names, types, HELP, labels, buckets, format."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from prometheus_client.metrics_core import Metric

from chiron_operator.emulator.metrics import build_1_2_5_buckets
from tests.emulator.emukit import (
    OPERATOR_FAMILIES,
    SAMPLE_DIR,
    buckets,
    families,
    label_names,
    running,
    sample_value,
)

LEGACY = ("vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds")
CURRENT = ("vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds")
SAMPLE_SHA256 = {
    "vllm_metrics_under_load.txt": (
        "4dc7801400d408de318dd19be1b147893fa4d553005f79db6c7db50a04029434"
    ),
    "vllm_metrics_after.txt": "6ad8b3d6ef2b5a8af6b24a44a8ffd7afb5fe7f6f19aed84f6fde67e741871d91",
}


def real(name: str = "vllm_metrics_after.txt") -> dict[str, Metric]:
    return families((SAMPLE_DIR / name).read_text())


@pytest.mark.parametrize("name", sorted(SAMPLE_SHA256))
def test_the_vendored_samples_are_the_captured_ones(name: str) -> None:
    assert hashlib.sha256((SAMPLE_DIR / name).read_bytes()).hexdigest() == SAMPLE_SHA256[name]


async def scrape_after_load(*flags: str) -> str:
    # The sample's server ran with --max-model-len 256, which sets the token-count buckets.
    async with running("--max-model-len", "256", "--time-scale", "20", *flags) as emu:
        await asyncio.gather(*(emu.client.complete(max_tokens=4) for _ in range(3)))
        return await emu.client.metrics()


async def test_operator_families_match_the_real_server() -> None:
    ours, theirs = families(await scrape_after_load()), real()
    for name in OPERATOR_FAMILIES:
        assert name in ours, name
        assert ours[name].type == theirs[name].type, name
        assert ours[name].documentation == theirs[name].documentation, name
        assert label_names(ours[name]) == label_names(theirs[name]), name
        assert buckets(ours[name]) == buckets(theirs[name]), name


async def test_every_exported_vllm_family_exists_in_the_real_server_unchanged() -> None:
    ours, theirs = families(await scrape_after_load()), real()
    exported = [n for n in ours if n.startswith("vllm:")]
    assert len(exported) >= 2 * len(OPERATOR_FAMILIES)  # with the _created gauges
    for name in exported:
        assert name in theirs, name
        assert (ours[name].type, ours[name].documentation) == (
            theirs[name].type,
            theirs[name].documentation,
        ), name
        assert label_names(ours[name]) == label_names(theirs[name]), name
        assert buckets(ours[name]) == buckets(theirs[name]), name


def test_token_buckets_are_vllms_1_2_5_series_up_to_max_model_len() -> None:
    assert build_1_2_5_buckets(256) == (1, 2, 5, 10, 20, 50, 100, 200)
    assert build_1_2_5_buckets(8192) == (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
    assert build_1_2_5_buckets(1) == (1,)


async def test_classic_format_keeps_colons_even_when_openmetrics_is_asked_for() -> None:
    async with running() as emu:
        accept = "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"
        async with emu.client.session.get("/metrics", headers={"Accept": accept}) as resp:
            assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = await resp.text()
    assert "\nvllm:num_requests_waiting{" in text
    assert "vllm_num_requests_waiting" not in text
    assert "# EOF" not in text


async def test_counters_and_histograms_account_for_every_request() -> None:
    async with running("--time-scale", "20") as emu:
        c = emu.client
        await asyncio.gather(
            *(c.complete(max_tokens=n, prompt="x", chiron_prompt_tokens=100 * n) for n in (1, 2, 3))
        )
        text = await c.metrics()
    labels = {"engine": "0", "model_name": "tiny"}
    assert sample_value(text, "vllm:request_success_total", finished_reason="length") == 3
    assert sample_value(text, "vllm:generation_tokens_total", **labels) == 6
    assert sample_value(text, "vllm:prompt_tokens_total", **labels) == 600
    assert sample_value(text, "vllm:request_prompt_tokens_sum", **labels) == 600
    assert sample_value(text, "vllm:time_to_first_token_seconds_count", **labels) == 3
    assert sample_value(text, "vllm:inter_token_latency_seconds_count", **labels) == 3  # 0+1+2
    assert sample_value(text, "vllm:e2e_request_latency_seconds_count", **labels) == 3
    assert sample_value(text, "vllm:num_requests_running", **labels) == 0
    assert sample_value(text, "vllm:kv_cache_usage_perc", **labels) == 0


@pytest.mark.parametrize(
    ("flags", "present", "absent"),
    [
        ((), CURRENT, LEGACY),
        (("--legacy-metric-names",), LEGACY, CURRENT),
        (("--metric-names", "both"), CURRENT + LEGACY, ()),
    ],
)
async def test_legacy_metric_names(
    flags: tuple[str, ...], present: tuple[str, ...], absent: tuple[str, ...]
) -> None:
    text = await scrape_after_load(*flags)
    ours = families(text)
    for name in present:
        assert name in ours and label_names(ours[name]) == {"engine", "model_name"}, name
    for name in absent:
        assert name not in ours, name
    if "vllm:time_per_output_token_seconds" in ours:
        itl_buckets = buckets(real()["vllm:inter_token_latency_seconds"])
        assert buckets(ours["vllm:time_per_output_token_seconds"]) == itl_buckets
        # Three requests of 4 tokens: 3 inter-token gaps each.
        assert sample_value(text, "vllm:time_per_output_token_seconds_count") == 9
