"""The vLLM pod template of a pool: what every role's pods run, minus what the operator owns.

The operator renders one Deployment per role from this template. It sets the engine flags the
controllers and roles decide (`vllm.OPERATOR_OWNED_FLAGS`), so those are rejected in `args` rather
than silently overridden: a user who wrote `--max-num-seqs 64` expects 64, and would otherwise
never learn that the local controller replaced it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final, Self

from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from chiron_operator.api.base import SpecModel
from chiron_operator.api.rules import enforce

# Kubernetes' own resource.Quantity grammar (apimachinery), as controller-gen emits it.
QUANTITY_PATTERN: Final = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+"
    r"(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
MAX_ARGS: Final = 256
MAX_ARG_LENGTH: Final = 4096


def _quantity_text(value: object) -> object:
    # YAML reads `nvidia.com/gpu: 4` as an int; Kubernetes accepts it, so the model does too and
    # normalises to the string form the rest of the operator compares against.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_text),
    Field(pattern=QUANTITY_PATTERN),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]


class EnvVar(SpecModel):
    """An environment variable of the vLLM container."""

    name: str = Field(min_length=1, description="Variable name.")
    value: str = Field(default="", description="Variable value.")


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value (Kubernetes core/v1)."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(StrEnum):
    """The taint effect a toleration matches (Kubernetes core/v1)."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(SpecModel):
    """A pod toleration, with the fields and meaning of Kubernetes core/v1 Toleration."""

    key: str | None = Field(
        default=None, description="Taint key to match; empty with operator Exists matches all."
    )
    operator: TolerationOperator | None = Field(
        default=None, description="Exists or Equal (Kubernetes' default: Equal)."
    )
    value: str | None = Field(default=None, description="Taint value to match (Equal only).")
    effect: TaintEffect | None = Field(
        default=None, description="Taint effect to match; empty matches every effect."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated, seconds."
    )


class ResourceRequirements(SpecModel):
    """Container resources; quantities in Kubernetes notation ("4", "16Gi", "500m")."""

    requests: dict[str, Quantity] = Field(
        default={}, description="Minimum resources, e.g. cpu, memory, nvidia.com/gpu."
    )
    limits: dict[str, Quantity] = Field(
        default={}, description="Maximum resources; nvidia.com/gpu must equal tensorParallelSize."
    )


class PodTemplate(SpecModel):
    """What every role's vLLM pods run; the operator adds the flags it owns per role."""

    image: str = Field(
        min_length=1, description="vLLM OpenAI-server image, e.g. vllm/vllm-openai:v0.11.0."
    )
    args: tuple[Annotated[str, Field(max_length=MAX_ARG_LENGTH)], ...] = Field(
        default=(),
        max_length=MAX_ARGS,
        description="Extra `vllm serve` arguments. Must not set --max-num-seqs, "
        "--scheduling-policy, --tensor-parallel-size or --port: the operator sets them.",
    )
    env: tuple[EnvVar, ...] = Field(default=(), description="Environment of the vLLM container.")
    resources: ResourceRequirements = Field(
        default=ResourceRequirements(), description="Resources of the vLLM container."
    )
    node_selector: dict[str, str] = Field(
        default={}, description="Node labels the pods must land on (e.g. a GPU product label)."
    )
    tolerations: tuple[Toleration, ...] = Field(
        default=(), description="Taints the pods tolerate (GPU nodes are often tainted)."
    )
    port: int = Field(default=8000, ge=1, le=65535, description="Port vLLM serves HTTP on.")
    tensor_parallel_size: int = Field(
        default=1,
        ge=1,
        description="GPUs per instance (vLLM --tensor-parallel-size); must equal the "
        "nvidia.com/gpu limit when that limit is set.",
    )
    service_account_name: str | None = Field(
        default=None, description="Service account of the pods (e.g. to pull model weights)."
    )
    annotations: dict[str, str] = Field(default={}, description="Extra pod annotations.")
    labels: dict[str, str] = Field(default={}, description="Extra pod labels.")

    @model_validator(mode="after")
    def _rules(self) -> Self:
        enforce(self, ("template",))
        return self
