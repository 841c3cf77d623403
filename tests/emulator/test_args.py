"""The `vllm serve`-style command line: honoured flags, ignored flags, validation."""

from __future__ import annotations

import pytest

from chiron_operator.api.vllm import OPERATOR_OWNED_FLAGS
from chiron_operator.emulator.__main__ import main
from chiron_operator.emulator.args import DEFAULT_MAX_MODEL_LEN, parse_args, split_unknown
from chiron_operator.emulator.metrics import MetricNames
from chiron_operator.emulator.scheduler import Policy
from chiron_operator.perfmodel.profiles import profile


def test_defaults_follow_vllm_and_the_8b_profile() -> None:
    c = parse_args(["meta-llama/Llama-3.1-8B-Instruct"])
    assert c.model == c.model_name == "meta-llama/Llama-3.1-8B-Instruct"
    assert (c.host, c.port, c.max_num_seqs) == ("0.0.0.0", 8000, 256)
    assert c.scheduling_policy is Policy.FCFS
    assert c.max_model_len == DEFAULT_MAX_MODEL_LEN
    assert c.latency == profile("llama31-8b-a100")
    assert c.kv_capacity_tokens == profile("llama31-8b-a100").kv_capacity_tokens
    assert (c.time_scale, c.startup_delay_s, c.tensor_parallel_size) == (1.0, 0.0, 1)
    assert c.metric_names is MetricNames.CURRENT
    assert c.preempt_for_priority is False
    assert c.ignored_args == ()


OWNED_VALUES = {
    "--max-num-seqs": ("7", "max_num_seqs", 7),
    "--scheduling-policy": ("priority", "scheduling_policy", Policy.PRIORITY),
    "--tensor-parallel-size": ("4", "tensor_parallel_size", 4),
    "--port": ("1234", "port", 1234),
}


@pytest.mark.parametrize(
    ("flag", "spelling"),
    [(f.flag, s) for f in OPERATOR_OWNED_FLAGS for s in f.spellings],
)
@pytest.mark.parametrize("joined", [False, True])
def test_every_spelling_of_an_operator_owned_flag_is_honoured(
    flag: str, spelling: str, joined: bool
) -> None:
    value, attr, expected = OWNED_VALUES[flag]
    args = [f"{spelling}={value}"] if joined else [spelling, value]
    c = parse_args(["m", *args])
    assert getattr(c, attr) == expected
    assert c.ignored_args == ()


def test_tensor_parallel_size_picks_the_70b_profile_of_that_tp() -> None:
    assert parse_args(["m", "-tp", "2"]).latency.name == "llama2-70b-a100-tp2"
    assert parse_args(["m", "--latency-profile", "llama2-70b-h100-tp8"]).tensor_parallel_size == 8


def test_unknown_vllm_flags_are_ignored_with_their_values() -> None:
    c = parse_args(
        [
            "--model",
            "m",
            "--gpu-memory-utilization",
            "0.9",
            "--enforce-eager",
            "--compilation-config",
            '{"level": 3}',
            "--dtype=bfloat16",
            "-O3",
            "--max_num_seqs",
            "12",
            "--served-model-name",
            "a",
            "b",
        ]
    )
    assert c.model == "m"
    assert c.max_num_seqs == 12
    assert c.served_model_names == ("a", "b")
    assert c.model_name == "a"
    assert c.ignored_args == (
        "--gpu-memory-utilization",
        "0.9",
        "--enforce-eager",
        "--compilation-config",
        '{"level": 3}',
        "--dtype=bfloat16",
        "-O3",
    )


@pytest.mark.parametrize("spelling", ["--preempt-for-priority", "--preempt_for_priority"])
def test_preempt_for_priority_is_an_emulator_flag_beside_ignored_vllm_ones(spelling: str) -> None:
    c = parse_args(["m", "--enforce-eager", spelling, "--scheduling-policy", "priority"])
    assert c.preempt_for_priority is True
    assert c.scheduling_policy is Policy.PRIORITY
    assert c.ignored_args == ("--enforce-eager",)


def test_split_unknown_keeps_negative_numbers_as_values() -> None:
    kept, ignored = split_unknown(["m", "--seed", "-1", "--swap-space", "-4"], {"--seed"})
    assert kept == ["m", "--seed", "-1"]
    assert ignored == ["--swap-space", "-4"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], MetricNames.CURRENT),
        (["--legacy-metric-names"], MetricNames.LEGACY),
        (["--metric-names", "both"], MetricNames.BOTH),
    ],
)
def test_metric_name_generations(flags: list[str], expected: MetricNames) -> None:
    assert parse_args(["m", *flags]).metric_names is expected


def test_kv_capacity_override_is_rounded_to_whole_blocks() -> None:
    c = parse_args(["m", "--kv-capacity-tokens", "1000", "--max-model-len", "512"])
    assert (c.kv_capacity_tokens, c.kv_blocks) == (992, 62)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["m", "--max-model-len", "4096", "--kv-capacity-tokens", "2048"],
        ["m", "--latency-profile", "llama2-70b-a100-tp4", "-tp", "2"],
        ["m", "-tp", "3"],
        ["m", "--latency-profile", "gpt-5"],
        ["m", "--time-scale", "0"],
        ["m", "--time-scale", "nan"],
        ["m", "--max-num-seqs", "0"],
        ["m", "--startup-delay-s", "-1"],
        ["m", "--scheduling-policy", "lifo"],
    ],
)
def test_invalid_command_lines_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2


def test_main_returns_the_exit_code_instead_of_raising() -> None:
    assert main(["--help"]) == 0
    assert main(["m", "--max-num-seqs", "-3"]) == 2
