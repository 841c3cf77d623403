"""What a pool may ask the operator to run: images and ServiceAccounts, under the operator's
policy. Pure: no I/O.

A pool's template is a privilege: whoever may create a pool has the operator create pods that
run its image under its ServiceAccount. An operator serving several tenants narrows that with
allowlists (`--allowed-image-prefix`, `--allowed-service-account`; the chart's `pools.*`
values). A pool outside them is held like an invalid spec: the InvalidSpec condition names the
field, and no Deployment of the pool is created or changed until the pool, or the policy, is
fixed. Empty allowlists allow everything (a single-tenant install).

Pod annotations that would loosen the pods' security context (AppArmor's and seccomp's legacy
per-pod annotations) are refused whatever the allowlists say.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from chiron_operator.api import LLMServingPoolSpec, check_spec
from chiron_operator.api.base import wire_path
from chiron_operator.api.validation import SpecError
from chiron_operator.kube.pod_security import DEFAULT_VLLM_SECURITY, VllmSecurity

DOCKER_HUB: Final = "docker.io"
# Annotations the kubelet still reads as security settings of the pod's containers.
SECURITY_ANNOTATION_PREFIXES: Final = (
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
)
# What may follow an allowlist entry in an image reference for the entry to match: the entry
# names a whole registry or repository path, never part of a name (`vllm` must not admit
# `vllm-evil`).
_BOUNDARIES: Final = ("/", ":", "@")


@dataclass(frozen=True, slots=True)
class PodPolicy:
    """The operator's policy on the pods pools ask for.

    `image_prefixes`: registries or repositories an image must be under (`registry.example.com`,
    `docker.io/vllm/vllm-openai`, `vllm/`); `service_accounts`: the ServiceAccount names a
    template may run under. Empty: anything. `vllm`: the security context of the vLLM pods.
    """

    image_prefixes: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    vllm: VllmSecurity = field(default=DEFAULT_VLLM_SECURITY)


DEFAULT_POD_POLICY: Final = PodPolicy()


def normalized_image(reference: str) -> str:
    """An image reference with Docker Hub's implied parts spelled out.

    `vllm/vllm-openai:v1` is `docker.io/vllm/vllm-openai:v1` and `ubuntu` is
    `docker.io/library/ubuntu`, as the container runtime pulls them; a first component with a
    dot or a port, or `localhost`, is a registry and kept.
    """
    first, _, rest = reference.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return reference
    if not rest:
        return f"{DOCKER_HUB}/library/{reference}"
    return f"{DOCKER_HUB}/{reference}"


def _normalized_prefix(prefix: str) -> str:
    first = prefix.split("/", 1)[0]
    if "." in first or ":" in first or first == "localhost":
        return prefix
    if "/" not in prefix.rstrip("/"):
        # `vllm/` is a Docker Hub namespace; a bare `ubuntu` is an official image.
        return f"{DOCKER_HUB}/{prefix}" if prefix.endswith("/") else normalized_image(prefix)
    return f"{DOCKER_HUB}/{prefix}"


def image_allowed(image: str, prefixes: Iterable[str]) -> bool:
    """Whether `image` lies under one of `prefixes` (always, when there are none)."""
    wanted = [_normalized_prefix(p) for p in prefixes]
    if not wanted:
        return True
    full = normalized_image(image)
    for prefix in wanted:
        if not full.startswith(prefix):
            continue
        rest = full[len(prefix) :]
        if prefix.endswith(_BOUNDARIES) or not rest or rest.startswith(_BOUNDARIES):
            return True
    return False


def violations(spec: LLMServingPoolSpec, policy: PodPolicy) -> list[SpecError]:
    """Every field of `spec` the policy refuses, each error naming its field."""
    errors: list[SpecError] = []
    template = spec.template
    if not image_allowed(template.image, policy.image_prefixes):
        errors.append(_image_error(("spec", "template", "image"), template.image, policy))
    gateway_image = spec.gateway.image
    # A disabled gateway's image is never run, so it is not refused either.
    if (
        spec.gateway.enabled
        and gateway_image is not None
        and not image_allowed(gateway_image, policy.image_prefixes)
    ):
        errors.append(_image_error(("spec", "gateway", "image"), gateway_image, policy))
    account = template.service_account_name
    if account is not None and policy.service_accounts and account not in policy.service_accounts:
        errors.append(_account_error(account, policy))
    return errors + _annotation_errors(template.annotations)


def _account_error(account: str, policy: PodPolicy) -> SpecError:
    path = wire_path(("spec", "template", "serviceAccountName"))
    allowed = ", ".join(policy.service_accounts)
    return SpecError(
        path,
        f"{path}: ServiceAccount {account!r} is not allowed by the operator's policy "
        f"(allowed: {allowed}; unset runs under the namespace's default)",
    )


def _annotation_errors(annotations: Mapping[str, str]) -> list[SpecError]:
    errors = []
    for key in sorted(annotations):
        if key.startswith(SECURITY_ANNOTATION_PREFIXES):
            path = wire_path(("spec", "template", "annotations", key))
            message = (
                "the operator sets the pods' security profile; this annotation would override it"
            )
            errors.append(SpecError(path, f"{path}: {message}"))
    return errors


def _image_error(parts: tuple[str, ...], image: str, policy: PodPolicy) -> SpecError:
    path = wire_path(parts)
    allowed = ", ".join(policy.image_prefixes)
    return SpecError(
        path,
        f"{path}: image {image!r} is not allowed by the operator's policy (allowed: {allowed})",
    )


def admitted_spec(
    raw: object, policy: PodPolicy
) -> tuple[LLMServingPoolSpec | None, list[SpecError]]:
    """The pool's spec when it is valid and the policy admits it; else None and every error.

    One verdict for the handlers and the ticks, so that neither writes a Deployment the other
    would refuse.
    """
    spec, errors = check_spec(raw)
    if spec is None:
        return None, errors
    refused = violations(spec, policy)
    return (None, refused) if refused else (spec, [])


def add_pod_policy_flags(group: argparse._ArgumentGroup) -> None:
    """The operator's flags of the pod policy (the chart's `pools.*` values)."""
    group.add_argument(
        "--allowed-image-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="a registry or repository pools' images must be under (repeatable; none: any image)",
    )
    group.add_argument(
        "--allowed-service-account",
        action="append",
        default=[],
        metavar="NAME",
        help="a ServiceAccount name pools' templates may run under (repeatable; none: any)",
    )
    group.add_argument(
        "--vllm-run-as-non-root",
        action="store_true",
        help="require the vLLM pods to run as a non-root user (their image must have one)",
    )
    group.add_argument(
        "--vllm-run-as-user",
        type=_non_root_uid,
        default=None,
        metavar="UID",
        help="run the vLLM containers as this non-root uid (and gid)",
    )


def _non_root_uid(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a non-root uid (a number >= 1), got {text!r}")
    return int(text)


def pod_policy(args: argparse.Namespace) -> PodPolicy:
    """The pod policy the flags give."""
    return PodPolicy(
        image_prefixes=tuple(args.allowed_image_prefix),
        service_accounts=tuple(args.allowed_service_account),
        vllm=VllmSecurity(
            run_as_non_root=args.vllm_run_as_non_root, run_as_user=args.vllm_run_as_user
        ),
    )
