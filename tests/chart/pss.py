"""Kubernetes' Pod Security Standards (`baseline` and `restricted`, v1.30) as a checker of pod
specs, for the pods the chart and the operator create.

Written from the standard's tables (kubernetes.io/docs/concepts/security/pod-security-standards),
controls that these pods could break only: host namespaces, privileged, capabilities, hostPath,
host ports, seccomp, privilege escalation, running as non-root, and the volume types.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

Json = Mapping[str, Any]
# `restricted` allows these volume types only (plus ephemeral and CSI ones).
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}


def _containers(pod: Json) -> Iterator[Json]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(key) or []


def baseline_violations(pod: Json) -> list[str]:
    """What in a pod spec the `baseline` profile forbids."""
    found = [f"{key}: true" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    found += [f"volume {v['name']}: hostPath" for v in pod.get("volumes") or [] if "hostPath" in v]
    for container in _containers(pod):
        name = container["name"]
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        found += [
            f"{name}: hostPort {port['hostPort']}"
            for port in container.get("ports") or []
            if port.get("hostPort")
        ]
        extra = set((context.get("capabilities") or {}).get("add") or []) - {
            "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
            "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
        }  # fmt: skip
        if extra:
            found.append(f"{name}: adds capabilities {sorted(extra)}")
    return found


def restricted_violations(pod: Json, *, allow_root: bool = False) -> list[str]:
    """What in a pod spec the `restricted` profile forbids (`allow_root`: all but the
    running-as-non-root control, which an image running as root cannot meet)."""
    found = baseline_violations(pod)
    pod_context = pod.get("securityContext") or {}
    found += [
        f"volume {v['name']}: type not allowed"
        for v in pod.get("volumes") or []
        if not set(v) - {"name"} <= RESTRICTED_VOLUMES
    ]
    for container in _containers(pod):
        found += _restricted_container(container, pod_context, allow_root=allow_root)
    return found


def _restricted_container(container: Json, pod_context: Json, *, allow_root: bool) -> list[str]:
    name = container["name"]
    context = container.get("securityContext") or {}
    found = []
    if context.get("allowPrivilegeEscalation") is not False:
        found.append(f"{name}: allowPrivilegeEscalation is not false")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        found.append(f"{name}: does not drop ALL capabilities")
    if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
        found.append(f"{name}: adds a capability other than NET_BIND_SERVICE")
    seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile") or {}
    if seccomp.get("type") not in SECCOMP_TYPES:
        found.append(f"{name}: no RuntimeDefault or Localhost seccomp profile")
    if not allow_root:
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if non_root is not True:
            found.append(f"{name}: runAsNonRoot is not true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser is 0")
    return found
