"""The vLLM metric families the emulator exports, true to a real vLLM V1 server.

Names, types, HELP texts, label names and histogram buckets are copied from real scrapes
(../shared/data/vllm_metrics_sample, vLLM 0.32); a test checks them against the sample. Every
series carries only `engine` and `model_name` labels (plus `finished_reason` on the success
counter), as in vLLM: the `pod` label comes from the scrape configuration.

Exposition is the classic text format from `generate_latest` on a dedicated registry. Never use
prometheus_client's built-in HTTP server: it answers Prometheus's OpenMetrics Accept header by
escaping `:` to `_`, which real vLLM does not do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
ENGINE: Final = "0"
LABELS: Final = ("engine", "model_name")
FINISHED_REASONS: Final = ("stop", "length", "abort", "error", "repetition")

TTFT_BUCKETS: Final = (
    *(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75),
    *(1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0),
)
ITL_BUCKETS: Final = (
    *(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75),
    *(1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0),
)
REQUEST_LATENCY_BUCKETS: Final = (
    *(0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0),
    *(120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0),
)
ITERATION_TOKENS_BUCKETS: Final = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
NUM_PREEMPTIONS_BUCKETS: Final = (1, 2, 3, 4, 5, 10, 20)
PARAMS_N_BUCKETS: Final = (1, 2, 5, 10, 20)


def build_1_2_5_buckets(max_value: int) -> tuple[int, ...]:
    """1, 2, 5, 10, 20, 50, ... up to `max_value`: vLLM's token-count buckets (max-model-len)."""
    buckets: list[int] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(buckets)
            buckets.append(value)
        exponent += 1


class MetricNames(StrEnum):
    """Which generation of vLLM names to export.

    CURRENT is vLLM >= 0.11; LEGACY exports the older `gpu_cache_usage_perc` and
    `time_per_output_token_seconds` instead of `kv_cache_usage_perc` and
    `inter_token_latency_seconds`; BOTH exports the two, as the releases in between did.
    """

    CURRENT = "current"
    LEGACY = "legacy"
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    """What vLLM records when a request finishes (durations in seconds)."""

    e2e_s: float
    queue_s: float
    prefill_s: float
    decode_s: float
    inference_s: float
    prompt_tokens: int
    generation_tokens: int
    max_tokens: int
    preemptions: int


class VllmMetrics:
    """vLLM's engine metrics for one engine and model, on their own registry."""

    def __init__(self, *, model_name: str, max_model_len: int, names: MetricNames) -> None:
        self.registry = CollectorRegistry()
        for collector in (GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR):
            # The process-wide collectors real vLLM also exposes (python_gc_*, process_*).
            self.registry.register(collector)
        self._model = model_name
        self._gauges(names)
        self._counters()
        self._latency_histograms(names)
        self._phase_histograms()
        self._request_histograms(build_1_2_5_buckets(max_model_len))

    def exposition(self) -> bytes:
        """The classic text exposition (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def _gauge(self, name: str, doc: str) -> Gauge:
        gauge = Gauge(name, doc, LABELS, registry=self.registry)
        return gauge.labels(engine=ENGINE, model_name=self._model)

    def _counter(self, name: str, doc: str) -> Counter:
        counter = Counter(name, doc, LABELS, registry=self.registry)
        return counter.labels(engine=ENGINE, model_name=self._model)

    def _histogram(self, name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
        histogram = Histogram(name, doc, LABELS, buckets=buckets, registry=self.registry)
        return histogram.labels(engine=ENGINE, model_name=self._model)

    def _gauges(self, names: MetricNames) -> None:
        self.running = self._gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches."
        )
        self.waiting = self._gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed."
        )
        self.kv_usage: list[Gauge] = []
        if names is not MetricNames.LEGACY:
            self.kv_usage.append(
                self._gauge(
                    "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."
                )
            )
        if names is not MetricNames.CURRENT:
            self.kv_usage.append(
                self._gauge(
                    "vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage."
                )
            )

    def _counters(self) -> None:
        self.preemptions = self._counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine."
        )
        self.prompt_tokens = self._counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed."
        )
        self.generation_tokens = self._counter(
            "vllm:generation_tokens", "Number of generation tokens processed."
        )
        success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            (*LABELS, "finished_reason"),
            registry=self.registry,
        )
        # vLLM creates every reason's series up front, so they exist at 0 before any request.
        self.success = {
            reason: success.labels(engine=ENGINE, model_name=self._model, finished_reason=reason)
            for reason in FINISHED_REASONS
        }

    def _latency_histograms(self, names: MetricNames) -> None:
        h = self._histogram
        self.ttft = h(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TTFT_BUCKETS,
        )
        self.itl: list[Histogram] = []
        if names is not MetricNames.LEGACY:
            self.itl.append(
                h(
                    "vllm:inter_token_latency_seconds",
                    "Histogram of inter-token latency in seconds.",
                    ITL_BUCKETS,
                )
            )
        if names is not MetricNames.CURRENT:
            self.itl.append(
                h(
                    "vllm:time_per_output_token_seconds",
                    "Histogram of time per output token in seconds.",
                    ITL_BUCKETS,
                )
            )
        self.tpot = h(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            ITL_BUCKETS,
        )

    def _phase_histograms(self) -> None:
        h = self._histogram
        buckets = REQUEST_LATENCY_BUCKETS
        phase = "Histogram of time spent in {} phase for request."
        self.e2e = h(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            buckets,
        )
        self.queue = h("vllm:request_queue_time_seconds", phase.format("WAITING"), buckets)
        self.inference = h("vllm:request_inference_time_seconds", phase.format("RUNNING"), buckets)
        self.prefill = h("vllm:request_prefill_time_seconds", phase.format("PREFILL"), buckets)
        self.decode = h("vllm:request_decode_time_seconds", phase.format("DECODE"), buckets)

    def _request_histograms(self, token_buckets: tuple[int, ...]) -> None:
        h = self._histogram
        tokens = "Number of {} tokens processed."
        self.request_prompt = h(
            "vllm:request_prompt_tokens", tokens.format("prefill"), token_buckets
        )
        self.request_generation = h(
            "vllm:request_generation_tokens", tokens.format("generation"), token_buckets
        )
        self.iteration_tokens = h(
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            ITERATION_TOKENS_BUCKETS,
        )
        self.max_generation = h(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            token_buckets,
        )
        self.params_n = h(
            "vllm:request_params_n", "Histogram of the n request parameter.", PARAMS_N_BUCKETS
        )
        self.params_max_tokens = h(
            "vllm:request_params_max_tokens",
            "Histogram of the max_tokens request parameter.",
            token_buckets,
        )
        self.request_preemptions = h(
            "vllm:request_num_preemptions",
            "Histogram of the number of times a request was preempted.",
            NUM_PREEMPTIONS_BUCKETS,
        )

    def set_state(self, running: int, waiting: int, kv_usage: float) -> None:
        """Publish the scheduler's gauges."""
        self.running.set(running)
        self.waiting.set(waiting)
        for gauge in self.kv_usage:
            gauge.set(kv_usage)

    def on_iteration(self, tokens: int, preemptions: int) -> None:
        """One engine step that processed `tokens` tokens and preempted `preemptions` requests."""
        self.iteration_tokens.observe(tokens)
        if preemptions:
            self.preemptions.inc(preemptions)

    def on_first_schedule(self, prompt_tokens: int) -> None:
        """A request's first admission: its prompt counts once, recompute does not."""
        self.prompt_tokens.inc(prompt_tokens)

    def on_token(self, ttft_s: float | None, itl_s: float | None) -> None:
        """A generated token: the first carries the TTFT, later ones the inter-token latency."""
        self.generation_tokens.inc()
        if ttft_s is not None:
            self.ttft.observe(ttft_s)
        if itl_s is not None:
            for histogram in self.itl:
                histogram.observe(itl_s)

    def on_finished(self, req: FinishedRequest) -> None:
        """A request that produced all its tokens (finished_reason "length")."""
        self.success["length"].inc()
        self.e2e.observe(req.e2e_s)
        self.queue.observe(req.queue_s)
        self.prefill.observe(req.prefill_s)
        self.decode.observe(req.decode_s)
        self.inference.observe(req.inference_s)
        if req.generation_tokens > 1:
            self.tpot.observe(req.decode_s / (req.generation_tokens - 1))
        self.request_prompt.observe(req.prompt_tokens)
        self.request_generation.observe(req.generation_tokens)
        self.max_generation.observe(req.max_tokens)
        self.params_max_tokens.observe(req.max_tokens)
        self.params_n.observe(1)
        self.request_preemptions.observe(req.preemptions)

    def on_aborted(self) -> None:
        """A request dropped before it finished (client gone or server stopping)."""
        self.success["abort"].inc()
