"""The Kubernetes operator: kopf handlers that gather a snapshot, decide, apply, report.

The only package that imports kopf.
"""
