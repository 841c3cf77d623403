"""Pod runtimes, argv rewriting and the file_sd document (no processes started here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chiron_operator.devcluster.cluster.filesd import Target, target_groups, write_file_sd
from chiron_operator.devcluster.cluster.processes import (
    ContainerRuntime,
    Launch,
    free_port,
    with_port,
)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["m", "--port", "8000", "--x"], ("m", "--port", "4242", "--x")),
        (["m", "--port=8000"], ("m", "--port", "4242")),
        (["m"], ("m", "--port", "4242")),
    ],
)
def test_with_port(args: list[str], expected: tuple[str, ...]) -> None:
    assert with_port(args, 4242) == expected


def test_container_runtime_runs_the_args_under_a_local_program() -> None:
    launch = Launch(
        namespace="llm",
        pod="p1-mixed-abc-xyz",
        port=4242,
        command=("vllm", "serve"),
        args=("m", "--port", "4242", "--max-num-seqs", "8"),
        env={"HF_HOME": "/cache"},
    )
    spec = ContainerRuntime(("chiron-emulator",)).process(launch)
    assert spec.argv == (
        "chiron-emulator",
        "m",
        "--port",
        "4242",
        "--max-num-seqs",
        "8",
        "--host",
        "127.0.0.1",
    )
    assert spec.env["HF_HOME"] == "/cache"
    assert spec.env["PATH"] == os.environ["PATH"]


def test_free_ports_are_bindable() -> None:
    assert 0 < free_port() < 65536


def test_file_sd_document(tmp_path: Path) -> None:
    labels = {"chiron.io/role": "batch", "chiron.io/pool": "p1", "other": "x"}
    groups = target_groups(
        [Target("llm", "p1-batch-b", 2001, labels), Target("llm", "p1-batch-a", 2000, {})]
    )
    assert groups == [
        {"targets": ["127.0.0.1:2000"], "labels": {"namespace": "llm", "pod": "p1-batch-a"}},
        {
            "targets": ["127.0.0.1:2001"],
            "labels": {
                "namespace": "llm",
                "pod": "p1-batch-b",
                "chiron_io_role": "batch",
                "chiron_io_pool": "p1",
            },
        },
    ]
    path = tmp_path / "sd" / "targets.json"
    assert write_file_sd(path, groups)
    assert not write_file_sd(path, groups)  # unchanged: not rewritten
    assert json.loads(path.read_text()) == groups
    assert [p.name for p in path.parent.iterdir()] == ["targets.json"]  # no temporary left
