"""The security context of a pool's vLLM pods. Pure: no I/O.

The default is what the official vllm/vllm-openai image runs with: it runs as root (its
Dockerfile has no USER) and writes caches under /root and /tmp, so `runAsNonRoot` and a
read-only root filesystem would stop it from starting. Everything else Kubernetes' `restricted`
Pod Security profile asks for holds by default: no privilege escalation, every capability
dropped, the runtime's default seccomp profile. An operator serving images that run as a
non-root user turns on `run_as_non_root` (`--vllm-run-as-non-root`), and may fix the user
(`--vllm-run-as-user`), which then meets the `restricted` profile in full.

The pool's template has no securityContext of its own, so nothing a pool says can loosen this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

RUNTIME_DEFAULT: Final = {"type": "RuntimeDefault"}
# Binding a port below this takes CAP_NET_BIND_SERVICE, even as root once ALL is dropped.
FIRST_UNPRIVILEGED_PORT: Final = 1024


@dataclass(frozen=True, slots=True)
class VllmSecurity:
    """What the operator requires of every vLLM pod beyond the always-on restrictions.

    `run_as_non_root` has the kubelet refuse a container whose user is root; `run_as_user`, when
    set, is the user (and group) the container runs as, and implies `run_as_non_root` unless it
    is 0, which is refused.
    """

    run_as_non_root: bool = False
    run_as_user: int | None = None

    def __post_init__(self) -> None:
        if self.run_as_user is not None and self.run_as_user < 1:
            raise ValueError(f"run_as_user must be a non-root uid (>= 1), got {self.run_as_user}")

    @property
    def non_root(self) -> bool:
        """Whether the pods must run as a user other than root."""
        return self.run_as_non_root or self.run_as_user is not None


DEFAULT_VLLM_SECURITY: Final = VllmSecurity()


def pod_security_context(security: VllmSecurity) -> dict[str, Any]:
    """The pod-level securityContext of a vLLM pod."""
    context: dict[str, Any] = {"seccompProfile": dict(RUNTIME_DEFAULT)}
    if security.non_root:
        context["runAsNonRoot"] = True
    if security.run_as_user is not None:
        context["runAsUser"] = security.run_as_user
        context["runAsGroup"] = security.run_as_user
        # Volumes (the model cache a user mounts through the image's own paths, /dev/shm) are
        # handed to the same group, so the non-root user can write them.
        context["fsGroup"] = security.run_as_user
    return context


def container_security_context(security: VllmSecurity, port: int) -> dict[str, Any]:
    """The vLLM container's securityContext, for vLLM serving on `port`.

    No capability is needed but NET_BIND_SERVICE for a port below 1024 (the one capability the
    `restricted` profile lets a container add): GPUs reach the container as devices from the
    device plugin, not through capabilities.
    """
    capabilities: dict[str, list[str]] = {"drop": ["ALL"]}
    if port < FIRST_UNPRIVILEGED_PORT:
        capabilities["add"] = ["NET_BIND_SERVICE"]
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": capabilities,
        "seccompProfile": dict(RUNTIME_DEFAULT),
    }
    if security.non_root:
        context["runAsNonRoot"] = True
    if security.run_as_user is not None:
        context["runAsUser"] = security.run_as_user
        context["runAsGroup"] = security.run_as_user
    return context
