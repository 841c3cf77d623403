"""Facts about vLLM the API relies on: the GPU resource, the flags the operator owns, and the
flags that would break what the operator relies on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

GPU_RESOURCE: Final = "nvidia.com/gpu"


@dataclass(frozen=True, slots=True)
class OwnedFlag:
    """A vLLM flag the operator sets itself, every spelling vLLM accepts, and who owns it."""

    flag: str
    spellings: tuple[str, ...]
    owner: str
    # False for a flag refused because it breaks the pool (`owner` then says how), not
    # because the operator sets it.
    owned: bool = True

    @property
    def why(self) -> str:
        """Why `spec.template.args` may not set it."""
        return f"the operator owns it ({self.owner})" if self.owned else self.owner

    def matches(self, arg: str) -> bool:
        """True when one argv entry sets this flag (`--flag` or `--flag=value`)."""
        return any(arg == s or arg.startswith(f"{s}=") for s in self.spellings)


OPERATOR_OWNED_FLAGS: Final = (
    OwnedFlag(
        "--max-num-seqs",
        ("--max-num-seqs", "--max_num_seqs"),
        "the local controller tunes the batch size per role within spec.roles",
    ),
    OwnedFlag(
        "--scheduling-policy",
        ("--scheduling-policy", "--scheduling_policy"),
        "mixed pods run the priority policy so interactive requests preempt batch work",
    ),
    OwnedFlag(
        "--tensor-parallel-size",
        ("--tensor-parallel-size", "--tensor_parallel_size", "-tp"),
        "set spec.template.tensorParallelSize instead",
    ),
    OwnedFlag("--port", ("--port",), "set spec.template.port instead"),
)


def _spellings(*flags: str) -> tuple[str, ...]:
    """Each flag as given and with vLLM's underscore spelling of its dashes."""
    found: list[str] = []
    for flag in flags:
        under = "--" + flag.removeprefix("--").replace("-", "_")
        found += [flag] if under == flag or not flag.startswith("--") else [flag, under]
    return tuple(found)


def _breaks(flag: str, why: str, *short: str) -> OwnedFlag:
    return OwnedFlag(flag, _spellings(flag, *short), why, owned=False)


# Accepted by vLLM, but each one silently breaks the pool: the readiness probe, the gateway and
# Prometheus reach vLLM on the pod IP and spec.template.port, the controllers read vLLM's
# metrics, the gateway routes by spec.model, and a pod gets spec.template.tensorParallelSize GPUs.
BREAKING_FLAGS: Final = (
    _breaks("--host", "the probes, the gateway and Prometheus reach vLLM on the pod's IP"),
    _breaks("--uds", "the probes, the gateway and Prometheus reach vLLM over TCP"),
    _breaks("--disable-log-stats", "the controllers read vLLM's metrics, which it turns off"),
    _breaks("--served-model-name", "the gateway and clients request the model as spec.model"),
    _breaks("--model", "the pods serve spec.model, which the operator passes to vllm serve"),
    _breaks(
        "--pipeline-parallel-size",
        "each pod gets spec.template.tensorParallelSize GPUs, not one per pipeline stage",
        "-pp",
    ),
    _breaks(
        "--data-parallel-size",
        "each pod gets spec.template.tensorParallelSize GPUs, not one set per data-parallel "
        "rank, and the operator scales instances itself",
        "-dp",
    ),
    _breaks(
        "--shutdown-timeout",
        "the operator sets it from spec.drain (requestTimeoutS, shutdownTimeoutFlag)",
    ),
)
