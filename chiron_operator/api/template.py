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
from chiron_operator.api.keys import check_keys
from chiron_operator.api.rules import enforce

# Kubernetes' own resource.Quantity grammar (apimachinery), as controller-gen emits it.
QUANTITY_PATTERN: Final = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+"
    r"(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
MAX_ARGS: Final = 256
MAX_ARG_LENGTH: Final = 4096
# Kubernetes' own formats for what the template copies into pod specs (apimachinery's
# validation): a label value, a DNS-1123 subdomain (service accounts), an environment variable
# name as Kubernetes before 1.34 accepts it (the chart supports 1.30).
LABEL_VALUE_PATTERN: Final = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME_PATTERN: Final = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
MAX_TENSOR_PARALLEL_SIZE: Final = 64

LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]


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

    name: str = Field(
        min_length=1, max_length=1024, pattern=ENV_NAME_PATTERN, description="Variable name."
    )
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

    @model_validator(mode="after")
    def _resource_names(self) -> Self:
        check_keys(type(self).__name__, {}, {"requests": self.requests, "limits": self.limits})
        return self


class PodTemplate(SpecModel):
    """What every role's vLLM pods run; the operator adds the flags it owns per role."""

    image: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^\S+$",
        description="vLLM OpenAI-server image, e.g. vllm/vllm-openai:v0.11.0.",
    )
    args: tuple[Annotated[str, Field(max_length=MAX_ARG_LENGTH)], ...] = Field(
        default=(),
        max_length=MAX_ARGS,
        description="Extra `vllm serve` arguments. Must not set --max-num-seqs, "
        "--scheduling-policy, --tensor-parallel-size or --port: the operator sets them; nor "
        "--host, --uds, --disable-log-stats, --served-model-name, --model, "
        "--pipeline-parallel-size, --data-parallel-size or --shutdown-timeout, which break "
        "what the operator relies on.",
    )
    env: tuple[EnvVar, ...] = Field(default=(), description="Environment of the vLLM container.")
    resources: ResourceRequirements = Field(
        default=ResourceRequirements(), description="Resources of the vLLM container."
    )
    node_selector: dict[str, LabelValue] = Field(
        default={}, description="Node labels the pods must land on (e.g. a GPU product label)."
    )
    tolerations: tuple[Toleration, ...] = Field(
        default=(), description="Taints the pods tolerate (GPU nodes are often tainted)."
    )
    port: int = Field(default=8000, ge=1, le=65535, description="Port vLLM serves HTTP on.")
    tensor_parallel_size: int = Field(
        default=1,
        ge=1,
        le=MAX_TENSOR_PARALLEL_SIZE,
        description="GPUs per instance (vLLM --tensor-parallel-size); must equal the "
        "nvidia.com/gpu limit when that limit is set.",
    )
    service_account_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Service account of the pods (e.g. to pull model weights).",
    )
    annotations: dict[str, str] = Field(default={}, description="Extra pod annotations.")
    labels: dict[str, LabelValue] = Field(default={}, description="Extra pod labels.")

    @model_validator(mode="after")
    def _rules(self) -> Self:
        maps = {"labels": self.labels, "annotations": self.annotations}
        check_keys(type(self).__name__, {**maps, "nodeSelector": self.node_selector}, {})
        enforce(self, ("template",))
        return self
