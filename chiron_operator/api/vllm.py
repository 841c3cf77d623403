"""Facts about vLLM the API relies on: the GPU resource and the flags the operator owns."""

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
