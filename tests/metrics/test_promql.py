"""The PromQL builders: golden strings, escaping, the pod-name regex and the query budget."""

from __future__ import annotations

import re

import pytest

from chiron_operator.api.spec import LLMServingPoolSpec
from chiron_operator.metrics.literals import duration, regex_literal, string_literal
from chiron_operator.metrics.promql import PoolQuery, PoolSelector, Signal

SEL = 'namespace="prod",pod=~"llama-(interactive|mixed|batch)-[a-z0-9]+(-[a-z0-9]+)?"'
ROLE = '"chiron_role", "$1", "pod", "llama-(interactive|mixed|batch)-.*"'


def tag(expr: str, part: str) -> str:
    return f'label_replace({expr}, "chiron_part", "{part}", "", "")'


def latency(histogram: str, suffix: str) -> str:
    buckets = f"rate({histogram}_bucket{{{SEL}}}[60s])"
    count = f"rate({histogram}_count{{{SEL}}}[60s])"
    return (
        tag(
            f"histogram_quantile(0.95, sum by (pod, le) (max by (pod, engine, le) ({buckets})))",
            f"quantile{suffix}",
        )
        + " or "
        + tag(f"sum by (pod) (max by (pod, engine) ({count}))", f"observations{suffix}")
    )


GOLDEN = {
    Signal.RUNNING: tag(
        f"sum by (pod) (max by (pod, engine) (vllm:num_requests_running{{{SEL}}}))", "value"
    )
    + " or "
    + tag(f"max by (pod) (timestamp(vllm:num_requests_running{{{SEL}}}))", "timestamp")
    + " or "
    + tag(
        "sum by (pod) (max by (pod, engine) "
        f"(avg_over_time(vllm:num_requests_running{{{SEL}}}[30s]))) / "
        "sum by (pod) (max by (pod, engine) "
        f"(rate(vllm:generation_tokens_total{{{SEL}}}[30s])))",
        "mean_itl",
    ),
    Signal.WAITING: f"sum by (pod) (max by (pod, engine) (vllm:num_requests_waiting{{{SEL}}}))",
    Signal.KV_CACHE: tag(
        f"avg by (pod) (max by (pod, engine) (vllm:kv_cache_usage_perc{{{SEL}}}))", "value:v1"
    )
    + " or "
    + tag(
        f"avg by (pod) (max by (pod, engine) (vllm:gpu_cache_usage_perc{{{SEL}}}))",
        "value:legacy",
    ),
    Signal.GENERATION_TOKENS: (
        f"sum by (pod) (max by (pod, engine) (rate(vllm:generation_tokens_total{{{SEL}}}[60s])))"
    ),
    Signal.ITL: latency("vllm:inter_token_latency_seconds", ":v1")
    + " or "
    + latency("vllm:time_per_output_token_seconds", ":legacy"),
    Signal.TTFT: latency("vllm:time_to_first_token_seconds", ""),
    Signal.OUTPUT_LENGTH: tag(
        "sum by (chiron_role, le) (label_replace(max by (pod, engine, le) "
        f"(rate(vllm:request_generation_tokens_bucket{{{SEL}}}[600s])), {ROLE}))",
        "bucket",
    )
    + " or "
    + tag(
        "sum by (chiron_role) (label_replace(max by (pod, engine) "
        f"(rate(vllm:request_generation_tokens_sum{{{SEL}}}[600s])), {ROLE}))",
        "sum",
    ),
}


GW = 'namespace="prod",pod=~"llama-gateway-[a-z0-9]+-[a-z0-9]+"'


def increase(series: str) -> str:
    return f"sum(max by (pod) (increase({series}{{{GW}}}[1800s])))"


GATEWAY_BATCH = " or ".join(
    (
        tag(
            "sum by (deadline) (max by (pod, deadline) "
            f"(chiron_gateway_batch_queued_requests{{{GW}}}))",
            "queue",
        ),
        tag(f"max(timestamp(chiron_gateway_batch_queued_tokens{{{GW}}}))", "timestamp"),
        tag(increase("chiron_gateway_batch_output_tokens_count"), "observations"),
        tag(increase("chiron_gateway_batch_output_tokens_sum"), "sum"),
        tag(increase("chiron_gateway_batch_output_tokens_squares_total"), "squares"),
    )
)


def pool_query(queue: str | None = None, *, gateway: bool = False) -> PoolQuery:
    return PoolQuery(
        PoolSelector("prod", "llama"),
        60.0,
        0.95,
        600.0,
        queue_query=queue,
        itl_window_s=30.0,
        gateway=gateway,
    )


@pytest.mark.parametrize("signal", list(GOLDEN))
def test_golden_query(signal: Signal) -> None:
    assert pool_query().queries()[signal] == GOLDEN[signal]


def test_issue_order_and_budget() -> None:
    assert list(pool_query().queries()) == list(GOLDEN)
    with_queue = pool_query('sum by (deadline) (q{pool="llama"})').queries()
    assert list(with_queue)[-1] is Signal.BATCH_QUEUE
    assert with_queue[Signal.BATCH_QUEUE] == 'sum by (deadline) (q{pool="llama"})'
    assert len(with_queue) == 8


def test_gateway_batch_query() -> None:
    queries = pool_query(gateway=True).queries()
    assert queries[Signal.GATEWAY_BATCH] == GATEWAY_BATCH
    # Batch-only lengths from the gateway, folded with its queue into one query: no vLLM
    # length histogram, and still seven queries.
    assert Signal.OUTPUT_LENGTH not in queries
    assert not any("vllm:request_generation_tokens" in q for q in queries.values())
    assert list(queries) == [*list(GOLDEN)[:-1], Signal.GATEWAY_BATCH]


def test_a_users_queue_replaces_the_gateways() -> None:
    queries = pool_query("sum by (deadline) (q)", gateway=True).queries()
    assert list(queries) == [*GOLDEN, Signal.BATCH_QUEUE]
    assert queries[Signal.OUTPUT_LENGTH] == GOLDEN[Signal.OUTPUT_LENGTH]
    assert not any("chiron_gateway_batch" in q for q in queries.values())


def test_no_query_names_a_pod() -> None:
    # Batched: the pod set enters only through the regex, so the text is the same for any size.
    for query in pool_query().queries().values():
        assert "llama-interactive-" not in query


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(60.0, "60s"), (5.0, "5s"), (0.5, "500ms"), (1.25, "1250ms"), (3600.0, "3600s")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.0, -1.0, 0.0004])
def test_duration_must_be_positive(seconds: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        duration(seconds)


@pytest.mark.parametrize(
    ("value", "literal"),
    [("prod", '"prod"'), ('a"b', '"a\\"b"'), ("a\\.b", '"a\\\\.b"')],
)
def test_string_literal(value: str, literal: str) -> None:
    assert string_literal(value) == literal


def test_regex_literal_escapes_metacharacters() -> None:
    assert regex_literal("llama.v2") == "llama\\.v2"
    assert re.fullmatch(regex_literal("a+b(c)"), "a+b(c)")


@pytest.mark.parametrize(
    ("name", "selected"),
    [
        ("llama-interactive-7d9f8b6c5-abcde", True),
        ("llama-mixed-6b5c4-x2x9z", True),
        ("llama-batch-58f7b-kkkkk", True),
        ("llama-batch-abcde", True),  # generateName truncation swallowed the hash
        ("llama-batch-interactive-6c7d8-xxxxx", False),  # pool "llama-batch"'s pod
        ("llama2-interactive-7d9f8-abcde", False),
        ("llama-gateway-7d9f8-abcde", False),
        ("llama-interactive-", False),
        ("xllama-interactive-7d9f8-abcde", False),
    ],
)
def test_pod_regex_selects_only_the_pools_deployment_pods(name: str, selected: bool) -> None:
    # Prometheus anchors regex matchers: fullmatch is its semantics.
    assert bool(re.fullmatch(PoolSelector("prod", "llama").pod_regex(), name)) is selected


@pytest.mark.parametrize(
    ("name", "selected"),
    [
        ("llama-gateway-7d9f8b6c5-abcde", True),
        ("llama-gateway-77-0", True),
        ("llama-gateway-gateway-7d9f8-abcde", False),  # pool "llama-gateway"'s gateway
        ("llama-gateway-abcde", False),  # not a Deployment's pod name
        ("llama-interactive-7d9f8-abcde", False),  # a vLLM pod
        ("llama2-gateway-7d9f8-abcde", False),
        ("xllama-gateway-7d9f8-abcde", False),
        ("llama-gateway-7d9f8-ABCDE", False),
    ],
)
def test_gateway_pod_regex_selects_only_the_pools_gateway(name: str, selected: bool) -> None:
    assert bool(re.fullmatch(PoolSelector("prod", "llama").gateway_pod_regex(), name)) is selected
    # and pool "llama-gateway" never reads pool "llama"'s gateway
    other = PoolSelector("prod", "llama-gateway").gateway_pod_regex()
    assert not re.fullmatch(other, "llama-gateway-7d9f8b6c5-abcde")


def test_gateway_series_use_the_configured_labels() -> None:
    selector = PoolSelector("prod", "llama.v2", pod_label="pod_name", namespace_label="ns")
    query = PoolQuery(
        selector, 60.0, 0.9, 300.0, gateway=True, gateway_length_window_s=300.0
    ).queries()[Signal.GATEWAY_BATCH]
    # The regex's backslash, escaped once more in the PromQL string.
    assert r'ns="prod",pod_name=~"llama\\.v2-gateway-[a-z0-9]+-[a-z0-9]+"' in query
    assert "max by (pod_name, deadline)" in query and "[300s]" in query


def test_dotted_pool_name_is_literal() -> None:
    regex = PoolSelector("prod", "llama.v2").pod_regex()
    assert re.fullmatch(regex, "llama.v2-batch-58f7b-kkkkk")
    assert not re.fullmatch(regex, "llamaxv2-batch-58f7b-kkkkk")


def test_custom_labels() -> None:
    selector = PoolSelector("prod", "llama", pod_label="kubernetes_pod_name", namespace_label="ns")
    waiting = PoolQuery(selector, 60.0, 0.9, 60.0).queries()[Signal.WAITING]
    assert waiting.startswith("sum by (kubernetes_pod_name) (max by (kubernetes_pod_name, engine)")
    assert 'ns="prod",kubernetes_pod_name=~"llama-' in waiting


def test_from_spec() -> None:
    spec = LLMServingPoolSpec.model_validate(
        {
            "model": "m",
            "template": {"image": "vllm/vllm-openai:v0.11.0"},
            "prometheus": {"url": "http://p:9090", "windowS": 30, "podLabel": "pod_name"},
            "slo": {"percentileRatio": 0.99},
            "batchQueue": {"queuedRequestsQuery": "sum by (d) (q)", "deadlineLabel": "d"},
        }
    )
    query = PoolQuery.from_spec("prod", "llama", spec, allow_promql=True)
    assert query == PoolQuery(
        PoolSelector("prod", "llama", pod_label="pod_name"),
        window_s=30.0,
        quantile=0.99,
        length_window_s=30.0,
        queue_query="sum by (d) (q)",
        deadline_label="d",
        itl_window_s=30.0,  # two 15 s scrapes, within the 30 s window
        gateway=True,  # the gateway is on by default: its per-class series join the running query
    )
    assert PoolQuery.from_spec("prod", "llama", spec, length_window_s=900.0).length_window_s == 900
    running = query.queries()[Signal.RUNNING]
    assert 'chiron_gateway_in_flight_requests{ns="prod"' not in running  # default labels
    assert 'chiron_gateway_in_flight_requests{namespace="prod",target_pod=~"llama-' in running
    assert 'class="interactive"' in running and "chiron_gateway_pod_cap_seqs" in running
    without = PoolQuery.from_spec(
        "prod",
        "llama",
        spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"enabled": False})}),
    )
    assert "chiron_gateway" not in without.queries()[Signal.RUNNING]
    assert "histogram_quantile(0.99, " in query.queries()[Signal.ITL]
    assert not query.gateway_batch  # the user's queue is used as it is


def test_from_spec_defaults_to_the_gateways_batch_signals() -> None:
    spec = LLMServingPoolSpec.model_validate(
        {
            "model": "m",
            "template": {"image": "vllm/vllm-openai:v0.11.0"},
            "prometheus": {"url": "http://p:9090"},
        }
    )
    query = PoolQuery.from_spec("prod", "llama", spec, length_window_s=600.0)
    assert query.gateway_batch
    assert query.queries()[Signal.GATEWAY_BATCH] == GATEWAY_BATCH
    off = spec.model_copy(update={"gateway": spec.gateway.model_copy(update={"enabled": False})})
    without = PoolQuery.from_spec("prod", "llama", off, length_window_s=600.0)
    assert not without.gateway_batch
    assert list(without.queries()) == list(GOLDEN)  # as before the gateway: no batch queue
    assert not any("chiron_gateway" in q for q in without.queries().values())


def test_a_structured_batch_queue_is_confined_to_the_pools_namespace() -> None:
    spec = LLMServingPoolSpec.model_validate(
        {
            "model": "m",
            "template": {"image": "vllm/vllm-openai:v0.11.0"},
            "prometheus": {"url": "http://p:9090"},
            "batchQueue": {
                "metric": {"name": "jobs:queued", "matchers": {"tier": 'a"b', "app": "x\\y"}},
                "deadlineLabel": "due",
            },
        }
    )
    query = PoolQuery.from_spec("prod", "llama", spec)
    assert query.queue_refusal == ""
    assert not query.gateway_batch
    assert query.queries()[Signal.BATCH_QUEUE] == (
        'sum by (due) (jobs:queued{namespace="prod",app="x\\\\y",tier="a\\"b"})'
    )
