"""The client tests run against the dev cluster's API server."""

from tests.devcluster.conftest import apiserver, kube, kubeconfig

__all__ = ["apiserver", "kube", "kubeconfig"]
