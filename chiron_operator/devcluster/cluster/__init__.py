"""A local stand-in for a Kubernetes cluster: an API server, a kubelet and a Prometheus.

- `apiserver.start_apiserver()` serves a kube-apiserver emulation (kmock 0.8 with the fixes
  kopf, kubectl and the kubernetes client need; `store`, `objects`, `patching`, `selectors`,
  `wire`, `resources`) in the running event loop; `apiserver.write_kubeconfig()` points clients
  at it.
- `kubelet.Kubelet` runs Deployments as local processes (`rollout`, `pods`, `processes`: a
  `PodRuntime` decides what runs, e.g. `processes.ContainerRuntime(("chiron-emulator",))`),
  reports pod and Deployment status, and writes a Prometheus file_sd file of the ready pods
  (`filesd`); a deleted pod drains as on a real node (`termination`: preStop sleep, SIGTERM,
  SIGKILL at its grace period).
- `prometheus.PrometheusProcess`: a private Prometheus scraping those pods.
- `stack.DevStack`: all of it at once, on an event loop in a thread, with an `audit` log of
  every API request and the identity (bearer token) that made it; `apiclient` is the small
  client the kubelet uses; `operator_process.OperatorProcess` runs the real operator against it.

It never imports the demo (`chiron_operator.devcluster.demo`).
"""
