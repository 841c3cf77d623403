{{/* vim: set filetype=mustache: */}}

{{/* The chart name. Suffixes such as "-metrics" and "-dashboard-operator" are appended to it. */}}
{{- define "chiron-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end }}

{{/*
The fully qualified name of the release's resources. If the release name contains the chart
name it is used as is. Truncated to 40 characters: the longest suffix the chart appends is
"-dashboard-operator" (19), and names stay within 63 characters.
*/}}
{{- define "chiron-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* Chart name and version, as used by the helm.sh/chart label. */}}
{{- define "chiron-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "chiron-operator.labels" -}}
helm.sh/chart: {{ include "chiron-operator.chart" . }}
{{ include "chiron-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chiron
{{- end }}

{{/* Labels that select the operator's pods (immutable in a Deployment: never add to them). */}}
{{- define "chiron-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chiron-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "chiron-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "chiron-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end }}

{{/* The operator image: repository, then @digest or :tag (default: the chart's appVersion). */}}
{{- define "chiron-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end }}

{{/* The ClusterRole the pools' gateways are bound to (the operator's --gateway-cluster-role). */}}
{{- define "chiron-operator.gatewayClusterRole" -}}
{{- default (printf "%s-gateway" (include "chiron-operator.fullname" .)) .Values.gateway.clusterRole -}}
{{- end }}

{{/* The image of the pools' gateways (the operator's $CHIRON_GATEWAY_IMAGE): its own by default. */}}
{{- define "chiron-operator.gatewayImage" -}}
{{- default (include "chiron-operator.image" .) .Values.gateway.image -}}
{{- end }}

{{/* The name of the kopf peering object(s). */}}
{{- define "chiron-operator.peeringName" -}}
{{- default (include "chiron-operator.fullname" .) .Values.peering.name -}}
{{- end }}

{{/* The Service of the operator's metrics; also the scrape job's name under a ServiceMonitor. */}}
{{- define "chiron-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "chiron-operator.fullname" .) -}}
{{- end }}

{{/* Where the Prometheus bearer token is mounted, and the file the operator reads. */}}
{{- define "chiron-operator.tokenDir" -}}
/var/run/secrets/chiron.io/prometheus
{{- end }}

{{/*
Checks of value combinations, repeated from values.schema.json for installs that skip schema
validation, with messages that name the fix. Included by the Deployment.
*/}}
{{- define "chiron-operator.validate" -}}
{{- if and (eq .Values.rbac.scope "namespaces") (not .Values.watchNamespaces) -}}
{{- fail "rbac.scope=namespaces needs watchNamespaces: list the namespaces whose pools the operator serves, or use rbac.scope=cluster" -}}
{{- end -}}
{{- if and .Values.rbac.create .Values.prometheus.poolAuthSecretNames (not .Values.watchNamespaces) (not .Values.prometheus.poolAuthSecretNamespaces) -}}
{{- fail "prometheus.poolAuthSecretNames with an operator serving every namespace needs prometheus.poolAuthSecretNamespaces: list the namespaces whose pools may use those Secrets (the chart never grants reading a Secret in every namespace)" -}}
{{- end -}}
{{- if .Values.watchNamespaces -}}
{{- range .Values.prometheus.poolAuthSecretNamespaces -}}
{{- if not (has . $.Values.watchNamespaces) -}}
{{- fail (printf "prometheus.poolAuthSecretNamespaces: %s is not in watchNamespaces: the operator serves no pool there" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) -}}
{{- fail "replicaCount > 1 needs peering.enabled=true: without kopf peering every replica would act on every pool" -}}
{{- end -}}
{{- end }}
