"""Command line of the emulator, shaped like `vllm serve` so a real vLLM pod template's args work.

`vllm serve MODEL [flags]` flags the emulator models are honoured; every other vLLM flag is
accepted, dropped with its value and logged, so an operator-built Deployment can swap the vLLM
image for the emulator without touching its args. vLLM accepts `--flag_name` for `--flag-name`;
so does the emulator. Put MODEL first (or pass `--model`): after an unknown flag, a bare word is
taken as that flag's value.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from chiron_operator.emulator.metrics import MetricNames
from chiron_operator.emulator.scheduler import Policy
from chiron_operator.perfmodel.latency import LatencyModel
from chiron_operator.perfmodel.profiles import SPECS, profile, profile_names

log = logging.getLogger(__name__)

# vLLM's defaults where the emulator has to pick one. vLLM reads max-model-len from the model's
# config, which the emulator does not have: 8192 is a common serving setting.
DEFAULT_MAX_MODEL_LEN: Final = 8192
DEFAULT_MAX_NUM_SEQS: Final = 256
DEFAULT_MAX_NUM_BATCHED_TOKENS: Final = 8192
DEFAULT_BLOCK_SIZE: Final = 16
DEFAULT_PORT: Final = 8000
LOG_LEVELS: Final = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """Everything the emulator runs with, validated and with defaults resolved."""

    model: str
    served_model_names: tuple[str, ...]
    host: str
    port: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    scheduling_policy: Policy
    tensor_parallel_size: int
    block_size: int
    latency: LatencyModel
    kv_capacity_tokens: int
    time_scale: float
    startup_delay_s: float
    seed: int
    metric_names: MetricNames
    log_level: int
    ignored_args: tuple[str, ...] = ()
    # vLLM's --shutdown-timeout: on SIGTERM, how long (wall-clock seconds, not time-scaled)
    # requests in flight may finish before the rest are aborted; 0 aborts at once, as in vLLM.
    shutdown_timeout_s: float = 0.0
    # Emulator-only: model a vLLM with the fix for upstream issue 40004 (see the scheduler).
    preempt_for_priority: bool = False

    @property
    def model_name(self) -> str:
        """The name in metric labels and responses: the first served name, as in vLLM."""
        return self.served_model_names[0]

    @property
    def kv_blocks(self) -> int:
        """Whole KV blocks that fit in the KV capacity."""
        return self.kv_capacity_tokens // self.block_size


class _Parser:
    """An argparse parser that remembers which option strings it knows."""

    def __init__(self) -> None:
        self.parser = argparse.ArgumentParser(
            prog="chiron-emulator",
            description="A vLLM-compatible server for machines without GPUs, paced by a latency "
            "model. Unknown vLLM flags are accepted and ignored.",
        )
        self.known: set[str] = {"-h", "--help"}

    def add(self, *flags: str, **kwargs: Any) -> None:
        self.known.update(flags)
        self.parser.add_argument(*flags, **kwargs)


def _build_parser() -> _Parser:
    p = _Parser()
    p.add("model", nargs="?", help="model name or path, as `vllm serve MODEL`")
    p.add("--model", dest="model_flag", help="the model, for `api_server --model` templates")
    p.add("--served-model-name", nargs="+", help="names the API answers to (default: MODEL)")
    p.add("--host", default="0.0.0.0", help="address to bind (default: all interfaces)")
    p.add("--port", type=int, default=DEFAULT_PORT, help="port; 0 picks a free one")
    p.add("--max-num-seqs", type=int, default=DEFAULT_MAX_NUM_SEQS, help="batch-size cap")
    p.add("--max-num-batched-tokens", type=int, default=DEFAULT_MAX_NUM_BATCHED_TOKENS)
    p.add("--max-model-len", type=int, default=DEFAULT_MAX_MODEL_LEN)
    p.add("--scheduling-policy", choices=[x.value for x in Policy], default=Policy.FCFS.value)
    p.add("-tp", "--tensor-parallel-size", type=int, default=None)
    p.add("--block-size", type=int, default=DEFAULT_BLOCK_SIZE, help="KV block size in tokens")
    p.add("--seed", type=int, default=0, help="seeds the filler text")
    p.add("--uvicorn-log-level", choices=sorted(LOG_LEVELS), default="info")
    p.add(
        "--shutdown-timeout",
        type=float,
        default=0.0,
        help="on SIGTERM, seconds to let requests in flight finish (default 0: abort them)",
    )
    p.add(
        "--latency-profile",
        choices=profile_names(),
        help="sim latency profile (default: llama31-8b-a100 at TP 1, llama2-70b-a100-tpN above)",
    )
    p.add("--time-scale", type=float, default=1.0, help="divides every modelled duration")
    p.add("--kv-capacity-tokens", type=int, help="override the profile's KV capacity")
    p.add("--startup-delay-s", type=float, default=0.0, help="modelled cold start before /health")
    p.add(
        "--preempt-for-priority",
        action="store_true",
        help="model vLLM builds with the upstream fix for vLLM issue 40004: under "
        "--scheduling-policy priority a waiting request evicts running requests of strictly "
        "worse priority (default off: like vLLM 0.32, a waiting request never preempts; only "
        "KV-cache pressure does)",
    )
    p.add(
        "--metric-names",
        choices=[x.value for x in MetricNames],
        default=MetricNames.CURRENT.value,
        help="current vLLM names, the older ones, or both",
    )
    p.add(
        "--legacy-metric-names",
        dest="metric_names",
        action="store_const",
        const=MetricNames.LEGACY.value,
        help="shorthand for --metric-names legacy",
    )
    return p


def _normalise(arg: str) -> str:
    """`--max_num_seqs=4` -> `--max-num-seqs=4`; values are left alone."""
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg.partition("=")
    return name.replace("_", "-") + sep + value


def _is_option(arg: str) -> bool:
    return arg.startswith("-") and len(arg) > 1 and not _is_number(arg)


def _is_number(arg: str) -> bool:
    try:
        float(arg)
    except ValueError:
        return False
    return True


def split_unknown(argv: Sequence[str], known: set[str]) -> tuple[list[str], list[str]]:
    """Separate the flags the emulator knows from the others (with their values).

    argparse alone would take an unknown flag's value for the positional MODEL, so unknown
    flags are removed first: a bare word right after one is its value.
    """
    kept: list[str] = []
    ignored: list[str] = []
    args = [_normalise(a) for a in argv]
    i = 0
    while i < len(args):
        arg = args[i]
        if not _is_option(arg) or arg.partition("=")[0] in known:
            kept.append(arg)
            i += 1
            continue
        ignored.append(arg)
        i += 1
        if "=" not in arg and i < len(args) and not _is_option(args[i]):
            ignored.append(args[i])
            i += 1
    return kept, ignored


def _latency_model(name: str | None, tp: int | None) -> tuple[LatencyModel, int]:
    """The latency model and the TP it runs at: the profile's TP must be the one asked for."""
    tp_of = {spec.name: spec.tp for spec in SPECS}
    if name is None:
        name = "llama31-8b-a100" if tp in (None, 1) else f"llama2-70b-a100-tp{tp}"
        if name not in tp_of:
            raise ValueError(f"no latency profile models --tensor-parallel-size {tp}")
    if tp is not None and tp_of[name] != tp:
        raise ValueError(f"latency profile {name} models TP {tp_of[name]}, not {tp}")
    return profile(name), tp_of[name]


def _positive(ns: argparse.Namespace, *names: str) -> None:
    for name in names:
        value = getattr(ns, name)
        # `not value > 0` also rejects NaN; infinity would make every modelled duration zero.
        if not value > 0 or math.isinf(value):
            raise ValueError(f"--{name.replace('_', '-')} must be positive and finite")


def _validate(ns: argparse.Namespace, kv_tokens: int) -> None:
    _positive(ns, "max_num_seqs", "max_num_batched_tokens", "max_model_len", "block_size")
    _positive(ns, "time_scale")
    if ns.startup_delay_s < 0:
        raise ValueError("--startup-delay-s must not be negative")
    if not 0 <= ns.shutdown_timeout <= 86400:
        raise ValueError("--shutdown-timeout must be in 0..86400 seconds")
    if not 0 <= ns.port <= 65535:
        raise ValueError("--port must be in 0..65535")
    usable = kv_tokens - kv_tokens % ns.block_size
    # vLLM refuses to start when one request of max-model-len tokens cannot fit in the KV cache;
    # the emulator does the same, which also guarantees that any admitted request can finish.
    if ns.max_model_len > usable:
        raise ValueError(
            f"--max-model-len {ns.max_model_len} exceeds the KV cache capacity of {usable} tokens"
        )


def parse_args(argv: Sequence[str] | None = None) -> EmulatorConfig:
    """Parse `vllm serve`-style arguments (default: the process's); SystemExit(2) if invalid."""
    p = _build_parser()
    kept, ignored = split_unknown(sys.argv[1:] if argv is None else list(argv), p.known)
    ns = p.parser.parse_args(kept)
    model = ns.model_flag or ns.model
    if model is None:
        p.parser.error("the model is required: chiron-emulator MODEL [flags]")
    try:
        latency, tp = _latency_model(ns.latency_profile, ns.tensor_parallel_size)
        kv_tokens = latency.kv_capacity_tokens
        if ns.kv_capacity_tokens is not None:
            kv_tokens = ns.kv_capacity_tokens
        _validate(ns, kv_tokens)
    except ValueError as exc:
        p.parser.error(str(exc))
    return EmulatorConfig(
        model=model,
        served_model_names=tuple(ns.served_model_name or [model]),
        host=ns.host,
        port=ns.port,
        max_num_seqs=ns.max_num_seqs,
        max_num_batched_tokens=ns.max_num_batched_tokens,
        max_model_len=ns.max_model_len,
        scheduling_policy=Policy(ns.scheduling_policy),
        tensor_parallel_size=tp,
        block_size=ns.block_size,
        latency=latency,
        kv_capacity_tokens=kv_tokens - kv_tokens % ns.block_size,
        time_scale=ns.time_scale,
        startup_delay_s=ns.startup_delay_s,
        seed=ns.seed,
        metric_names=MetricNames(ns.metric_names),
        log_level=LOG_LEVELS[ns.uvicorn_log_level],
        ignored_args=tuple(ignored),
        shutdown_timeout_s=ns.shutdown_timeout,
        preempt_for_priority=ns.preempt_for_priority,
    )
