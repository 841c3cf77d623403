"""kubectl 1.32 against the dev cluster: apply, get, list by label, patch, scale, delete."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from chiron_operator.core.enums import Role
from chiron_operator.devcluster.cluster.apiserver import ApiServerHandle
from chiron_operator.kube import build_deployment
from tests.devcluster.support import pool_spec

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    async def __call__(self, *args: str) -> str:
        # A subprocess of the loop, not subprocess.run: the server answers in this loop.
        process = await asyncio.create_subprocess_exec(
            "kubectl",
            f"--kubeconfig={self.kubeconfig}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        assert b"Warning" not in err, err.decode()
        return out.decode()

    async def json(self, *args: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(await self(*args, "-o", "json"))
        return loaded


@pytest.fixture
def kubectl(kubeconfig: Path) -> Kubectl:
    return Kubectl(kubeconfig)


def manifest(tmp_path: Path, obj: dict[str, Any]) -> str:
    path = tmp_path / f"{obj['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(obj))
    return str(path)


async def test_apply_get_patch_scale_delete(kubectl: Kubectl, tmp_path: Path) -> None:
    deployment = build_deployment(
        "p1", "default", "uid-1", pool_spec(), Role.MIXED, replicas=1, max_num_seqs=8
    )
    del deployment["metadata"]["ownerReferences"]  # no pool here: it would be collected
    assert "created" in await kubectl(
        "apply", "--validate=false", "-f", manifest(tmp_path, deployment)
    )

    # A re-apply is a strategic merge computed by kubectl (with $setElementOrder directives).
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "vllm/vllm-openai:v0.12.0"
    container["env"].append({"name": "EXTRA", "value": "1"})
    assert "configured" in await kubectl(
        "apply", "--validate=false", "-f", manifest(tmp_path, deployment)
    )
    live = await kubectl.json("get", "deployment", "p1-mixed")
    live_container = live["spec"]["template"]["spec"]["containers"][0]
    assert live_container["image"] == "vllm/vllm-openai:v0.12.0"
    assert [e["name"] for e in live_container["env"]] == ["HF_HOME", "EXTRA"]
    assert live_container["args"] == container["args"]

    listed = await kubectl(
        "get", "deployments", "-l", "chiron.io/pool=p1,chiron.io/role=mixed", "-o", "name"
    )
    assert listed.split() == ["deployment.apps/p1-mixed"]
    assert await kubectl("get", "deployments", "-l", "chiron.io/pool=other", "-o", "name") == ""

    await kubectl(
        "patch",
        "deployment",
        "p1-mixed",
        "--type=merge",
        "-p",
        '{"metadata": {"labels": {"x": "1"}}}',
    )
    await kubectl(
        "patch",
        "deployment",
        "p1-mixed",
        "--type=json",
        "-p",
        '[{"op": "replace", "path": "/spec/replicas", "value": 2}]',
    )
    await kubectl(
        "patch",
        "deployment",
        "p1-mixed",
        "-p",
        '{"spec": {"template": {"spec": {"containers": [{"name": "vllm", "args": ["m"]}]}}}}',
    )
    await kubectl("scale", "deployment", "p1-mixed", "--replicas=3")
    live = await kubectl.json("get", "deployment", "p1-mixed")
    assert live["metadata"]["labels"]["x"] == "1"
    assert live["spec"]["replicas"] == 3
    live_container = live["spec"]["template"]["spec"]["containers"][0]
    assert (live_container["args"], live_container["image"]) == (["m"], "vllm/vllm-openai:v0.12.0")

    assert "deleted" in await kubectl("delete", "deployment", "p1-mixed", "--wait=false")
    assert await kubectl("get", "deployments", "-o", "name") == ""


async def test_custom_resources_by_short_name(
    kubectl: Kubectl, tmp_path: Path, apiserver: ApiServerHandle
) -> None:
    pool = {
        "apiVersion": "chiron.io/v1alpha1",
        "kind": "LLMServingPool",
        "metadata": {"name": "p1", "namespace": "default"},
        "spec": {"model": "m", "mode": "Observe"},
    }
    await kubectl("apply", "--validate=false", "-f", manifest(tmp_path, pool))
    pool["spec"]["mode"] = "Enforce"
    await kubectl("apply", "--validate=false", "-f", manifest(tmp_path, pool))
    # kubectl wait watches the object: the watch stream must be one client-go accepts.
    waited = await kubectl("wait", "--for=jsonpath={.spec.mode}=Enforce", "lsp/p1", "--timeout=5s")
    assert "condition met" in waited
    live = await kubectl.json("get", "lsp", "p1")
    assert live["spec"] == {"model": "m", "mode": "Enforce"}
    assert live["metadata"]["generation"] == 2
    assert await kubectl("get", "llmservingpools", "-o", "name") == "llmservingpool.chiron.io/p1\n"
