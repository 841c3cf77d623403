"""A user's own trace files: both CSV formats, their errors, and their replay in a scenario.

Every trace here is written by the test into a temporary directory: files the package does
not ship, read the way a user's would be.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chiron_operator.core.enums import RequestClass
from chiron_operator.sim import workloads
from chiron_operator.sim.scenario import build_workload, load_scenario
from chiron_operator.sim.sourcefile import SourceError
from chiron_operator.sim.traces import read_trace

PLAIN = """\
output_tokens,arrival_s,prompt_tokens,class,deadline_s
20,100.0,64,,
30,100.5,"128",interactive,

0,101.0,300,batch,600
40,103.0,0,batch,
"""

AZURE = """\
TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:50.9951690,879,0
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def test_a_plain_trace_keeps_classes_and_relative_deadlines(tmp_path: Path) -> None:
    trace = read_trace(write(tmp_path, "plain.csv", PLAIN))
    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.5, 1.0, 3.0])  # from the first row
    assert trace.prompt_tokens.tolist() == [64, 128, 300, 1]  # 0 is replayed as 1
    assert trace.output_tokens.tolist() == [20, 30, 1, 40]
    assert trace.batch.tolist() == [False, False, True, True]
    assert trace.deadline_after_s[2] == 600.0
    assert np.isnan(trace.deadline_after_s[[0, 1, 3]]).all()
    with pytest.raises(ValueError, match="read-only"):
        trace.arrival_s[0] = 1.0  # cached and shared


def test_an_azure_trace_is_interactive_and_counts_from_its_first_request(tmp_path: Path) -> None:
    trace = read_trace(write(tmp_path, "azure.csv", AZURE))
    np.testing.assert_allclose(trace.arrival_s, [0.0, 4.314579, 4.314579])
    assert trace.prompt_tokens.tolist() == [374, 396, 879]
    assert trace.output_tokens.tolist() == [44, 109, 1]
    assert not trace.batch.any()


def test_the_vendored_azure_traces_are_read_by_the_same_parser() -> None:
    path = workloads.DATA_DIR / "azure_llm_inference_2023" / "AzureLLMInferenceTrace_code.csv"
    trace = read_trace(path)
    arrival_s, prompts, outputs = workloads.azure_arrays("code")
    np.testing.assert_array_equal(trace.arrival_s, arrival_s)
    np.testing.assert_array_equal(trace.prompt_tokens, prompts)
    np.testing.assert_array_equal(trace.output_tokens, outputs)


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    path = write(tmp_path, "plain.csv", PLAIN)
    assert len(read_trace(path).arrival_s) == 4
    path.write_text(PLAIN + "30,104.0,10,,\n")
    assert len(read_trace(path).arrival_s) == 5


HEADER = "arrival_s,prompt_tokens,output_tokens,class,deadline_s\n"


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("", 1, 1, "empty file: a trace starts with a header row"),
        (HEADER, 1, 1, "no requests after the header row"),
        (HEADER + "0,10,5,,\n1,-3,5,,\n", 3, 3, "prompt_tokens -3 is negative"),
        (HEADER + "0,10,5,,\n1,10,5.5,,\n", 3, 6, "output_tokens '5.5' is not a whole number"),
        (HEADER + "0,10,5,,\nsoon,10,5,,\n", 3, 1, "arrival_s 'soon' is not a number"),
        (HEADER + "0,10,5,,\nnan,10,5,,\n", 3, 1, "arrival_s 'nan' is not finite"),
        (
            HEADER + "0,10,5,,\n9,10,5,,\n\n4,10,5,,\n",
            5,
            1,
            "arrival_s '4' is earlier than the previous request's '9' (line 3)",
        ),
        (HEADER + "0,10,5,offline,\n", 2, 8, "class 'offline' is not one of: interactive, batch"),
        (HEADER + "0,10,5,batch,-60\n", 2, 14, "deadline_s '-60' is not a positive number"),
        (HEADER + "0,10,5,,60\n", 2, 9, "deadline_s on an interactive request"),
        (HEADER + "0,10,5\n", 2, 7, "3 fields, but the header has 5"),
        ("arrival_s,prompt_tokens\n0,10\n", 1, 1, "missing column 'output_tokens'"),
        ("arrival_s,prompt,output_tokens\n0,1,1\n", 1, 11, "unknown column 'prompt'"),
        ("arrival_s,arrival_s\n0,1\n", 1, 11, "column 'arrival_s' appears twice"),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,10,5\n",
            2,
            1,
            "TIMESTAMP 'yesterday' is not a date and time",
        ),
    ],
)
def test_a_bad_trace_names_its_line_and_column(
    tmp_path: Path, text: str, line: int, column: int, fragment: str
) -> None:
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(SourceError) as raised:
        read_trace(path)
    assert f"{path}:{line}:{column}: {fragment}" in str(raised.value)


def test_a_file_that_is_not_text_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "binary.csv"
    path.write_bytes(b"arrival_s,prompt_tokens,output_tokens\n0,1,\xff\n")
    with pytest.raises(SourceError, match=r"binary\.csv:2:1: not UTF-8 text"):
        read_trace(path)


SCENARIO = """\
name: my-traffic
profile: llama31-8b-a100
horizonS: 600
workload:
  - {kind: trace, path: traces/plain.csv, timeCompress: 2, offsetS: 10}
  - {kind: trace, path: traces/plain.csv, startS: 0.5, durationS: 3, batchDeadlineS: 90}
  - {kind: trace, path: traces/azure.csv, rateScale: 3}
pool:
  slo: {batchDeadlineS: 120}
"""


def test_a_scenario_replays_traces_read_from_its_own_directory(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    write(tmp_path / "traces", "plain.csv", PLAIN)
    write(tmp_path / "traces", "azure.csv", AZURE)
    scenario = load_scenario(write(tmp_path, "mine.yaml", SCENARIO))
    requests = build_workload(scenario, seed=1)
    assert requests == build_workload(scenario, seed=1)
    compressed = [r for r in requests if r.arrival_s >= 10.0]
    # Arrivals are squeezed, then shifted; deadlines stay seconds after arrival.
    assert [r.arrival_s for r in compressed] == [10.0, 10.25, 10.5, 11.5]
    assert [r.deadline_s for r in compressed if r.deadline_s] == [10.5 + 600.0, 11.5 + 120.0]
    window = [r for r in requests if r.prompt_tokens in {128, 300} and r.arrival_s < 10.0]
    assert [(r.arrival_s, r.request_class) for r in window] == [
        (0.0, RequestClass.INTERACTIVE),
        (0.5, RequestClass.BATCH),
    ]
    assert window[1].deadline_s == 0.5 + 600.0
    azure = [r for r in requests if r.prompt_tokens in {374, 396, 879}]
    assert len(azure) == pytest.approx(9, abs=3)  # three times the rows, thinned at random
    assert len(requests) == 4 + 3 + len(azure)


def test_the_pools_default_deadline_and_the_parts_own(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    write(tmp_path / "traces", "plain.csv", PLAIN)
    write(tmp_path / "traces", "azure.csv", AZURE)
    scenario = load_scenario(write(tmp_path, "mine.yaml", SCENARIO))
    backlog = [r for r in build_workload(scenario) if r.prompt_tokens == 1]
    due = sorted(r.deadline_s - r.arrival_s for r in backlog if r.deadline_s is not None)
    assert due == pytest.approx([90.0, 120.0])  # the part's batchDeadlineS, else the pool's


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            SCENARIO.replace("traces/azure.csv", "traces/missing.csv"),
            "mine.yaml:7:25: workload[2].path: no trace file ",
        ),
        (
            SCENARIO.replace("rateScale: 3", "rateScale: -3"),
            "mine.yaml:7:54: workload[2].rateScale: Input should be greater than 0",
        ),
        (
            SCENARIO.replace("offsetS: 10", "offsetz: 10"),
            "mine.yaml:5:60: workload[0].offsetz: unknown field",
        ),
        (SCENARIO.replace("horizonS: 600", "horizonS: [600"), "mine.yaml:4:9: invalid YAML: "),
        ("", "mine.yaml:1:1: empty file: a scenario is a YAML mapping"),
    ],
)
def test_a_bad_scenario_names_its_line_and_column(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "traces").mkdir()
    write(tmp_path / "traces", "plain.csv", PLAIN)
    write(tmp_path / "traces", "azure.csv", AZURE)
    with pytest.raises(SourceError) as raised:
        load_scenario(write(tmp_path, "mine.yaml", text))
    assert expected in str(raised.value)


def test_a_scenario_with_a_bad_trace_fails_on_load_with_the_traces_line(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    write(tmp_path / "traces", "plain.csv", HEADER + "0,10,5,,\n1,10,-5,,\n")
    write(tmp_path / "traces", "azure.csv", AZURE)
    with pytest.raises(SourceError, match=r"plain\.csv:3:6: output_tokens -5 is negative"):
        load_scenario(write(tmp_path, "mine.yaml", SCENARIO))
