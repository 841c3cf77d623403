"""A local stand-in for a Kubernetes cluster: an API server and a kubelet, for tests and demos.

- `apiserver.start_apiserver()` serves a kube-apiserver emulation (kmock 0.8 with the fixes
  kopf, kubectl and the kubernetes client need) in the running event loop;
  `apiserver.write_kubeconfig()` points clients at it.
- `kubelet.Kubelet` runs the operator's Deployments as local processes (a `PodRuntime` decides
  which: `processes.ContainerRuntime(("chiron-emulator",))` for the vLLM emulator), reports pod
  and Deployment status, and writes a Prometheus file_sd file of the ready pods; a deleted pod
  drains as on a real node (`termination`: preStop sleep, SIGTERM, SIGKILL at its grace period).
- `prometheus.PrometheusProcess`: a private Prometheus scraping those pods (file_sd).
- `stack.DevStack`: all of it at once, on an event loop in a thread, with an `audit` log of
  every API request and the identity (bearer token) that made it;
  `operator_process.OperatorProcess` runs the real operator against it as a process.
- `traffic`: clients of a pool's Services, measured as users measure them.
- `demo` (`make demo`): the real operator autoscaling emulated pods under a replayed trace.

A top-level package: it may use every layer below it but the operator, and only the
measurement package (`chiron_operator.perf`) imports it.
"""
