"""Chiron: hierarchical, SLO-aware autoscaling of vLLM serving pools on Kubernetes."""

__version__ = "0.1.0"
