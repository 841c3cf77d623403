"""The operator Deployment: restricted pod security in every values case, the command line
the team fixed, probes, the writable /tmp and the Prometheus token file."""

from __future__ import annotations

from typing import Any

import pytest

from chiron_operator.operator.main import parse_args
from tests.chart.support import (
    CASES,
    NAMESPACE,
    merged_values,
    objects,
    one,
    operator_container,
    operator_deployment,
)


def flag_values(args: list[str], flag: str) -> list[str]:
    """Every value given to `flag` (as `--flag value`)."""
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == flag]


@pytest.mark.parametrize("case", CASES)
def test_pod_security_is_restricted(case: str) -> None:
    pod = operator_deployment(case)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == 65532
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for volume in pod["volumes"]:
        assert "hostPath" not in volume


@pytest.mark.parametrize("case", CASES)
def test_tmp_is_a_writable_empty_dir(case: str) -> None:
    pod = operator_deployment(case)["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in operator_container(case)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    tmp = mounts["/tmp"]
    assert not tmp.get("readOnly", False)
    assert "emptyDir" in volumes[tmp["name"]]


@pytest.mark.parametrize("case", CASES)
def test_probes_and_metrics_port(case: str) -> None:
    values = merged_values(case)
    container = operator_container(case)
    (port,) = container["ports"]
    assert port == {
        "name": "http-metrics",
        "containerPort": values["operator"]["metricsPort"],
        "protocol": "TCP",
    }
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    service = one(objects(case), "Service")
    assert service["spec"]["ports"][0]["port"] == values["operator"]["metricsPort"]
    assert service["spec"]["ports"][0]["targetPort"] == "http-metrics"
    selector = operator_deployment(case)["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector


@pytest.mark.parametrize("case", CASES)
def test_resources_are_bounded(case: str) -> None:
    resources = operator_container(case)["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


@pytest.mark.parametrize("case", CASES)
def test_command_line(case: str) -> None:
    values = merged_values(case)
    container = operator_container(case)
    args: list[str] = container["args"]
    assert "command" not in container  # the image's ENTRYPOINT: python -m chiron_operator
    watched = values["watchNamespaces"]
    assert flag_values(args, "--namespace") == watched
    assert ("--all-namespaces" in args) == (not watched)
    assert flag_values(args, "--metrics-port") == [str(values["operator"]["metricsPort"])]
    assert flag_values(args, "--log-format") == [values["operator"]["logFormat"]]
    assert ("--verbose" in args) == values["operator"]["verbose"]
    if values["peering"]["enabled"]:
        name = values["peering"]["name"] or "chiron-operator"
        assert flag_values(args, "--peering") == [name]
        assert "--standalone" not in args
    else:
        assert "--peering" not in args
        assert "--standalone" in args


@pytest.mark.parametrize("case", CASES)
def test_replicas_and_rollout(case: str) -> None:
    values = merged_values(case)
    spec = operator_deployment(case)["spec"]
    assert spec["replicas"] == values["replicaCount"]
    if values["replicaCount"] == 1:
        # Never two operators at once: the old pod stops before the new one starts.
        assert spec["strategy"] == {"type": "Recreate"}
    else:
        assert values["peering"]["enabled"]
        assert spec["strategy"]["rollingUpdate"]["maxSurge"] == 0


@pytest.mark.parametrize("case", CASES)
def test_peering_objects_match_the_watch_mode(case: str) -> None:
    values = merged_values(case)
    objs = objects(case)
    cluster = [o for o in objs if o["kind"] == "ClusterKopfPeering"]
    namespaced = [o for o in objs if o["kind"] == "KopfPeering"]
    if not values["peering"]["enabled"]:
        assert cluster == namespaced == []
    elif values["watchNamespaces"]:
        assert cluster == []
        assert sorted(o["metadata"]["namespace"] for o in namespaced) == sorted(
            values["watchNamespaces"]
        )
    else:
        assert namespaced == []
        assert [o["metadata"]["name"] for o in cluster] == ["chiron-operator"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container["env"]}


def test_auth_secret_is_mounted_as_a_token_file() -> None:
    case = "auth-secret-values"
    secret = merged_values(case)["prometheus"]["authSecret"]
    container = operator_container(case)
    pod = operator_deployment(case)["spec"]["template"]["spec"]
    token_file = env_of(container)["CHIRON_PROMETHEUS_TOKEN_FILE"]["value"]
    (mount,) = [m for m in container["volumeMounts"] if token_file.startswith(m["mountPath"])]
    assert mount["readOnly"] is True
    assert token_file == f"{mount['mountPath']}/{secret['key']}"
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == secret["name"]
    assert volume["secret"]["items"] == [{"key": secret["key"], "path": secret["key"]}]


@pytest.mark.parametrize("case", CASES)
def test_no_token_file_without_a_secret(case: str) -> None:
    values = merged_values(case)
    env = env_of(operator_container(case))
    assert ("CHIRON_PROMETHEUS_TOKEN_FILE" in env) == bool(
        values["prometheus"]["authSecret"]["name"]
    )
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_image_defaults_to_the_app_version_and_honours_a_digest() -> None:
    assert operator_container("default")["image"] == "ghcr.io/chiron-operator/chiron-operator:0.1.0"
    digest = merged_values("cluster-scope-values")["image"]["digest"]
    assert operator_container("cluster-scope-values")["image"].endswith(f"@{digest}")


@pytest.mark.parametrize("case", CASES)
def test_the_gateways_run_the_operators_image_unless_told_otherwise(case: str) -> None:
    values = merged_values(case)
    container = operator_container(case)
    image = env_of(container)["CHIRON_GATEWAY_IMAGE"]["value"]
    assert image == (values["gateway"]["image"] or container["image"])
    role = values["gateway"]["clusterRole"] or "chiron-operator-gateway"
    assert flag_values(container["args"], "--gateway-cluster-role") == [role]
    # The flags must be the operator's own (the argparse it runs).
    assert parse_args(container["args"]).gateway_cluster_role == role


def test_existing_service_account_is_used_not_created() -> None:
    case = "everything-values"
    objs = objects(case)
    assert [o for o in objs if o["kind"] == "ServiceAccount"] == []
    pod = operator_deployment(case)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "llm-platform-operator"


def test_service_account_lives_in_the_release_namespace() -> None:
    account = one(objects("default"), "ServiceAccount")
    assert account["metadata"] == {**account["metadata"], "namespace": NAMESPACE}
