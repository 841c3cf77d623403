"""The operator's pod policy: which images and ServiceAccounts pools may run, and its flags."""

from __future__ import annotations

from typing import Any

import pytest

from chiron_operator.api import parse_spec
from chiron_operator.kube.pod_security import VllmSecurity
from chiron_operator.operator.main import parse_args
from chiron_operator.operator.pod_policy import (
    PodPolicy,
    admitted_spec,
    image_allowed,
    normalized_image,
    pod_policy,
    violations,
)
from tests.kube.support import SPEC

PREFIXES = ("registry.example.com/inference/", "vllm/vllm-openai", "ghcr.io")
POLICY = PodPolicy(image_prefixes=PREFIXES, service_accounts=("weights-reader",))


def raw(**template: Any) -> dict[str, Any]:
    return {**SPEC, "template": {**SPEC["template"], **template}}


@pytest.mark.parametrize(
    ("image", "full"),
    [
        ("vllm/vllm-openai:v0.11.0", "docker.io/vllm/vllm-openai:v0.11.0"),
        ("ubuntu", "docker.io/library/ubuntu"),
        ("docker.io/vllm/vllm-openai@sha256:ab", "docker.io/vllm/vllm-openai@sha256:ab"),
        ("localhost/vllm:dev", "localhost/vllm:dev"),
        ("registry:5000/vllm", "registry:5000/vllm"),
    ],
)
def test_images_are_compared_as_the_runtime_pulls_them(image: str, full: str) -> None:
    assert normalized_image(image) == full


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("vllm/vllm-openai:v0.11.0", True),
        ("docker.io/vllm/vllm-openai@sha256:" + "a" * 64, True),
        ("vllm/vllm-openai", True),
        ("registry.example.com/inference/vllm:1", True),
        ("ghcr.io/team/vllm:1", True),
        # Never part of a name: a prefix ends where a path component does.
        ("vllm/vllm-openai-evil:1", False),
        ("registry.example.com/inference-evil/vllm:1", False),
        ("ghcr.io.evil.example/vllm:1", False),
        ("registry.example.com/other/vllm:1", False),
        ("evil/vllm-openai:1", False),
        ("vllm/other:1", False),
    ],
)
def test_an_image_must_lie_under_an_allowed_registry_or_repository(
    image: str, allowed: bool
) -> None:
    assert image_allowed(image, PREFIXES) is allowed


def test_no_prefix_allows_every_image() -> None:
    assert image_allowed("anything.example/at:all", ())


def test_a_refused_pool_is_told_which_fields_and_what_is_allowed() -> None:
    spec = parse_spec(
        {
            **raw(image="evil.example/miner:1", serviceAccountName="cluster-reader"),
            "gateway": {"image": "evil.example/gateway:1"},
        }
    )
    errors = violations(spec, POLICY)
    assert [e.path for e in errors] == [
        "spec.template.image",
        "spec.gateway.image",
        "spec.template.serviceAccountName",
    ]
    assert errors[0].message.startswith("spec.template.image: image 'evil.example/miner:1'")
    assert "registry.example.com/inference/, vllm/vllm-openai, ghcr.io" in errors[0].message
    assert "ServiceAccount 'cluster-reader'" in errors[2].message
    assert "weights-reader" in errors[2].message


def test_an_allowed_pool_passes_and_an_unset_account_is_the_namespaces_default() -> None:
    assert violations(parse_spec(raw()), POLICY) == []
    template = {k: v for k, v in SPEC["template"].items() if k != "serviceAccountName"}
    assert violations(parse_spec({**SPEC, "template": template}), POLICY) == []


def test_a_disabled_gateways_image_is_not_run_so_not_refused() -> None:
    spec = parse_spec({**raw(), "gateway": {"enabled": False, "image": "evil.example/gw:1"}})
    assert violations(spec, POLICY) == []


def test_annotations_that_would_loosen_the_pods_profiles_are_refused_under_any_policy() -> None:
    annotations = {
        "container.apparmor.security.beta.kubernetes.io/vllm": "unconfined",
        "seccomp.security.alpha.kubernetes.io/pod": "unconfined",
        "sidecar.istio.io/inject": "false",
    }
    errors = violations(parse_spec(raw(annotations=annotations)), PodPolicy())
    assert [e.path for e in errors] == [
        "spec.template.annotations[container.apparmor.security.beta.kubernetes.io/vllm]",
        "spec.template.annotations[seccomp.security.alpha.kubernetes.io/pod]",
    ]


def test_admitted_spec_is_one_verdict_for_invalid_and_refused_specs() -> None:
    spec, errors = admitted_spec(raw(), POLICY)
    assert spec is not None and errors == []
    spec, errors = admitted_spec(raw(image="evil.example/x:1"), POLICY)
    assert spec is None and [e.path for e in errors] == ["spec.template.image"]
    spec, errors = admitted_spec({**raw(), "model": ""}, POLICY)
    assert spec is None and [e.path for e in errors] == ["spec.model"]


def test_the_policy_comes_from_flags() -> None:
    args = parse_args(
        [
            "--allowed-image-prefix",
            "vllm/vllm-openai",
            "--allowed-image-prefix",
            "ghcr.io",
            "--allowed-service-account",
            "weights-reader",
            "--vllm-run-as-non-root",
            "--vllm-run-as-user",
            "1000",
        ]
    )
    assert pod_policy(args) == PodPolicy(
        image_prefixes=("vllm/vllm-openai", "ghcr.io"),
        service_accounts=("weights-reader",),
        vllm=VllmSecurity(run_as_non_root=True, run_as_user=1000),
    )
    assert pod_policy(parse_args([])) == PodPolicy()


@pytest.mark.parametrize("uid", ["0", "-1", "root"])
def test_a_root_or_malformed_uid_is_refused_at_startup(uid: str) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--vllm-run-as-user", uid])
