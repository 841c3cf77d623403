{{/*
The operator's API permissions, as data. Every rule is one thing the operator (or kopf under
it) does; nothing is a wildcard. docs/INSTALL.md lists the same table, and tests/chart checks
the rendered rules against it.

"chiron-operator.rbac.poolRules": namespaced resources in the namespaces the operator serves.
"chiron-operator.rbac.clusterRules": cluster-scoped resources; always in a ClusterRole.
"chiron-operator.rbac.secretRules": the Prometheus token Secret, by name, in the release namespace.
"chiron-operator.rbac.gatewayRules": what each pool's gateway may do, in its pool's namespace (a
ClusterRole the operator binds there, per pool, with a RoleBinding).
"chiron-operator.rbac.poolSecretRules": pools' own token Secrets (`prometheus.poolAuthSecretNames`),
by name, in a Role of each namespace `chiron-operator.poolAuthNamespaces` lists: never in a
ClusterRole, where `get` on a name would reach that Secret in every namespace, kube-system's too.
*/}}

{{- define "chiron-operator.rbac.poolRules" -}}
# The pools: watched by kopf, patched for its finalizer and progress annotations.
- apiGroups: ["chiron.io"]
  resources: ["llmservingpools"]
  verbs: ["get", "list", "watch", "patch"]
# The pools' status: decisions, conditions and the state that survives restarts.
- apiGroups: ["chiron.io"]
  resources: ["llmservingpools/status"]
  verbs: ["get", "patch"]
# One vLLM Deployment per role and the gateway's (<pool>-gateway): read (get, list by the pool's
# labels), created, then scaled and patched (--max-num-seqs). Polled each tick, never watched.
# Deleted: the gateway's, when spec.gateway.enabled turns false.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "create", "patch", "delete"]
# The Services of the traffic classes (<pool>-interactive, <pool>-batch) and the gateway's
# (<pool>): listed by the pool's labels, created, or patched when the create finds one. Deleted:
# the gateway's, when it is disabled.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "create", "patch", "delete"]
# Each gateway's identity (<pool>-gateway) and its RoleBinding to the gateway ClusterRole: read by
# name, created, patched, deleted when the gateway is disabled.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["rolebindings"]
  verbs: ["get", "create", "patch", "delete"]
# The SQLite store's claim of each gateway (<pool>-gateway-store): read by name, created when
# missing. Never patched or deleted: it holds accepted batches, and its owner reference has the
# garbage collector delete it with the pool.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create"]
# Binding the gateway ClusterRole, and no other role, without holding its permissions.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["clusterroles"]
  resourceNames: [{{ include "chiron-operator.gatewayClusterRole" . | quote }}]
  verbs: ["bind"]
# vLLM pods: listed for readiness, patched with controller.kubernetes.io/pod-deletion-cost.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
# Events about pools: kopf and the operator both post core/v1 Events, create only.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Conflict detection: an HPA or a KEDA ScaledObject targeting a pool's Deployment (listed per tick).
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["list"]
{{- if and .Values.peering.enabled .Values.watchNamespaces }}
# kopf peering of an operator serving listed namespaces: a KopfPeering in each of them.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{- define "chiron-operator.rbac.clusterRules" -}}
# kopf's discovery of custom resources (runtime observation of CRDs).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- if not .Values.watchNamespaces }}
# Serving every namespace.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- if .Values.peering.enabled }}
# kopf peering of a cluster-wide operator: one ClusterKopfPeering.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
{{- end }}

{{- define "chiron-operator.rbac.secretRules" -}}
# The Prometheus bearer token, and no other Secret.
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: [{{ .Values.prometheus.authSecret.name | quote }}]
  verbs: ["get"]
{{- end }}

{{- define "chiron-operator.rbac.poolSecretRules" -}}
# Pools' Prometheus tokens (spec.prometheus.authSecretRef), by name only, in this namespace.
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames:
  {{- range .Values.prometheus.poolAuthSecretNames }}
    - {{ . | quote }}
  {{- end }}
  verbs: ["get"]
{{- end }}

{{/* The namespaces where pools' token Secrets are readable: as listed, else the watched ones. */}}
{{- define "chiron-operator.poolAuthNamespaces" -}}
{{- if .Values.prometheus.poolAuthSecretNames -}}
{{- default .Values.watchNamespaces .Values.prometheus.poolAuthSecretNamespaces | toJson -}}
{{- else -}}
[]
{{- end -}}
{{- end }}

{{- define "chiron-operator.rbac.gatewayRules" -}}
# The pool's pods: the vLLM pods it routes to (role, readiness, address, --max-num-seqs) and the
# gateway replicas sharing the caps. Watched by label; get for a single pod.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# The pool: each role's target batch size from its status. Watched with a fieldSelector on
# metadata.name, which the API server authorizes as `watch` (no list).
- apiGroups: ["chiron.io"]
  resources: ["llmservingpools"]
  verbs: ["get", "watch"]
{{- end }}
