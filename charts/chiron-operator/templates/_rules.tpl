{{/*
The rule groups of the PrometheusRule, as a Prometheus rule file's `groups:` list. Kept apart
from the PrometheusRule object so that deploy/kustomize/plain-prometheus can render the same
groups into a plain rule file, and so the tests can feed them to `promtool check rules`.

Recording rules: the per pool and role signals the operator reads, with vLLM's per-pod series
first deduplicated by (pod, engine) (two scrape jobs on one pod must count once) and both vLLM
name generations accepted (kv_cache_usage_perc / gpu_cache_usage_perc, inter_token_latency_seconds
/ time_per_output_token_seconds). Names follow level:metric:operation.
*/}}
{{- define "chiron-operator.ruleGroups" -}}
{{- $w := .Values.prometheusRule.rateWindow -}}
{{- $a := .Values.prometheusRule.alerts -}}
{{- $docs := printf "%s/blob/main/docs/OBSERVABILITY.md" .Chart.Home -}}
- name: chiron-vllm.rules
  rules:
    - record: namespace_pool_role:vllm_num_requests_running:sum
      expr: |-
        sum by (namespace, pool, role) (
          max by (namespace, pool, role, pod, engine) (vllm:num_requests_running{pool!=""})
        )
    - record: namespace_pool_role:vllm_num_requests_waiting:sum
      expr: |-
        sum by (namespace, pool, role) (
          max by (namespace, pool, role, pod, engine) (vllm:num_requests_waiting{pool!=""})
        )
    - record: namespace_pool_role:vllm_kv_cache_usage_perc:avg
      expr: |-
        avg by (namespace, pool, role) (
          max by (namespace, pool, role, pod, engine) (
            vllm:kv_cache_usage_perc{pool!=""} or vllm:gpu_cache_usage_perc{pool!=""}
          )
        )
    - record: namespace_pool_role:vllm_generation_tokens:rate
      expr: |-
        sum by (namespace, pool, role) (
          max by (namespace, pool, role, pod, engine) (
            rate(vllm:generation_tokens_total{pool!=""}[{{ $w }}])
          )
        )
    - record: namespace_pool_role:vllm_num_preemptions:rate
      expr: |-
        sum by (namespace, pool, role) (
          max by (namespace, pool, role, pod, engine) (
            rate(vllm:num_preemptions_total{pool!=""}[{{ $w }}])
          )
        )
    - record: namespace_pool_role:vllm_time_to_first_token_seconds_count:rate
      expr: |-
        sum by (namespace, pool, role) (
          max by (namespace, pool, role, pod, engine) (
            rate(vllm:time_to_first_token_seconds_count{pool!=""}[{{ $w }}])
          )
        )
    - record: namespace_pool_role:vllm_request_generation_tokens_count:rate
      expr: |-
        sum by (namespace, pool, role) (
          max by (namespace, pool, role, pod, engine) (
            rate(vllm:request_generation_tokens_count{pool!=""}[{{ $w }}])
          )
        )
    - record: namespace_pool_role:vllm_time_to_first_token_seconds:p95
      expr: |-
        histogram_quantile(0.95,
          sum by (namespace, pool, role, le) (
            max by (namespace, pool, role, pod, engine, le) (
              rate(vllm:time_to_first_token_seconds_bucket{pool!=""}[{{ $w }}])
            )
          )
        )
    - record: namespace_pool_role:vllm_inter_token_latency_seconds:p95
      expr: |-
        histogram_quantile(0.95,
          sum by (namespace, pool, role, le) (
            max by (namespace, pool, role, pod, engine, le) (
              rate(vllm:inter_token_latency_seconds_bucket{pool!=""}[{{ $w }}])
              or
              rate(vllm:time_per_output_token_seconds_bucket{pool!=""}[{{ $w }}])
            )
          )
        )
- name: chiron-operator.alerts
  rules:
    {{- with $a.sloSlackNegative }}{{ if .enabled }}
    - alert: ChironSLOSlackNegative
      expr: |-
        max by (namespace, pool, slo) (chiron_slo_slack_ratio) < 0
      for: {{ .for }}
      labels:
        severity: {{ .severity }}
        {{- with $.Values.prometheusRule.alertLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: Pool {{`{{ $labels.namespace }}/{{ $labels.pool }}`}} misses its {{`{{ $labels.slo }}`}} SLO.
        description: >-
          The observed {{`{{ $labels.slo }}`}} at the SLO percentile has exceeded the target of
          pool {{`{{ $labels.namespace }}/{{ $labels.pool }}`}} for {{ .for }} (slack
          {{`{{ $value | humanizePercentage }}`}}; 0 is exactly on target).
        runbook_url: {{ $docs }}#chironsloslacknegative
    {{- end }}{{ end }}
    {{- with $a.metricsStale }}{{ if .enabled }}
    - alert: ChironMetricsStale
      expr: |-
        max by (namespace, pool) (chiron_metrics_available) == 0
        or
        max by (namespace, pool) (chiron_metrics_age_seconds) > {{ .maxAgeSeconds }}
      for: {{ .for }}
      labels:
        severity: {{ .severity }}
        {{- with $.Values.prometheusRule.alertLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: Pool {{`{{ $labels.namespace }}/{{ $labels.pool }}`}} has no fresh vLLM metrics.
        description: >-
          The operator has not read fresh vLLM metrics for pool
          {{`{{ $labels.namespace }}/{{ $labels.pool }}`}} for {{ .for }}. It holds the pool's
          replicas and batch sizes (it never scales down on missing data) until they return.
        runbook_url: {{ $docs }}#chironmetricsstale
    {{- end }}{{ end }}
    {{- with $a.maxReplicasQueueRising }}{{ if .enabled }}
    - alert: ChironPoolAtMaxReplicasQueueRising
      expr: |-
        (
          max by (namespace, pool, role) (chiron_applied_replicas)
          >= on (namespace, pool, role)
          max by (namespace, pool, role) (chiron_max_replicas > 0)
        )
        and on (namespace, pool, role)
        (
          (
            deriv(namespace_pool_role:vllm_num_requests_waiting:sum[{{ .window }}]) > 0
            and on (namespace, pool, role)
            namespace_pool_role:vllm_num_requests_waiting:sum > 0
          )
          or on (namespace, pool, role)
          label_replace(
            max by (namespace, pool) (deriv(chiron_batch_queued_requests[{{ .window }}])) > 0,
            "role", "batch", "", ""
          )
        )
      for: {{ .for }}
      labels:
        severity: {{ .severity }}
        {{- with $.Values.prometheusRule.alertLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: >-
          Role {{`{{ $labels.role }}`}} of pool {{`{{ $labels.namespace }}/{{ $labels.pool }}`}}
          is at maxReplicas and its queue keeps growing.
        description: >-
          The {{`{{ $labels.role }}`}} role runs {{`{{ $value }}`}} replicas, its maxReplicas
          bound, and its queue has grown over the last {{ .window }} for {{ .for }}. The
          operator cannot add capacity: raise spec.roles.{{`{{ $labels.role }}`}}.maxReplicas
          or shed load.
        runbook_url: {{ $docs }}#chironpoolatmaxreplicasqueuerising
    {{- end }}{{ end }}
    {{- with $a.batchRequestsFailing }}{{ if .enabled }}
    - alert: ChironBatchRequestsFailing
      expr: |-
        (
          sum by (namespace, pool) (
            max by (namespace, pool, pod) (
              rate(chiron_gateway_requests_total{class="batch", outcome="failed", pool!=""}[{{ .window }}])
            )
          )
          /
          sum by (namespace, pool) (
            max by (namespace, pool, pod, outcome) (
              rate(chiron_gateway_requests_total{class="batch", outcome=~"completed|failed", pool!=""}[{{ .window }}])
            )
          )
        ) > {{ .maxFailedRatio }}
      for: {{ .for }}
      labels:
        severity: {{ .severity }}
        {{- with $.Values.prometheusRule.alertLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: >-
          The gateway of pool {{`{{ $labels.namespace }}/{{ $labels.pool }}`}} fails
          {{`{{ $value | humanizePercentage }}`}} of its batch requests.
        description: >-
          {{`{{ $value | humanizePercentage }}`}} of the batch requests the gateway of pool
          {{`{{ $labels.namespace }}/{{ $labels.pool }}`}} finished over the last {{ .window }}
          failed (a final error answer, or no answer after every retry), for {{ .for }}; the
          threshold is {{ .maxFailedRatio }}. Failed Batch API requests are in their batches'
          error files.
        runbook_url: {{ $docs }}#chironbatchrequestsfailing
    {{- end }}{{ end }}
    {{- with $a.batchQueueStalled }}{{ if .enabled }}
    - alert: ChironBatchQueueStalled
      expr: |-
        (
          sum by (namespace, pool) (
            max by (namespace, pool, pod, deadline) (chiron_gateway_batch_queued_requests{pool!=""})
          ) > 0
        )
        unless on (namespace, pool)
        (
          sum by (namespace, pool) (
            max by (namespace, pool, pod, outcome) (
              increase(chiron_gateway_requests_total{class="batch", outcome=~"completed|failed", pool!=""}[{{ .window }}])
            )
          ) > 0
        )
      for: {{ .for }}
      labels:
        severity: {{ .severity }}
        {{- with $.Values.prometheusRule.alertLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: >-
          Batch work of pool {{`{{ $labels.namespace }}/{{ $labels.pool }}`}} is queued and
          none finishes.
        description: >-
          {{`{{ $value }}`}} batch requests are queued at the gateway of pool
          {{`{{ $labels.namespace }}/{{ $labels.pool }}`}} and, for {{ .for }}, none has finished
          (completed or failed) within {{ .window }}. Nothing is serving the pool's batch work:
          unless it resumes, its deadlines will be missed.
        runbook_url: {{ $docs }}#chironbatchqueuestalled
    {{- end }}{{ end }}
    {{- with $a.conflict }}{{ if .enabled }}
    - alert: ChironConflict
      expr: |-
        max by (namespace, pool) (chiron_conflict) > 0
      for: {{ .for }}
      labels:
        severity: {{ .severity }}
        {{- with $.Values.prometheusRule.alertLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: Pool {{`{{ $labels.namespace }}/{{ $labels.pool }}`}} conflicts with another actor.
        description: >-
          Another autoscaler (an HPA or a KEDA ScaledObject) targets a Deployment of pool
          {{`{{ $labels.namespace }}/{{ $labels.pool }}`}}, or something else changes its
          replicas, for {{ .for }}. The operator does not act on the pool until it is resolved.
        runbook_url: {{ $docs }}#chironconflict
    {{- end }}{{ end }}
    {{- if .Values.serviceMonitor.enabled }}{{ with $a.operatorDown }}{{ if .enabled }}
    - alert: ChironOperatorDown
      expr: |-
        absent(up{job="{{ include "chiron-operator.metricsServiceName" $ }}", namespace="{{ $.Release.Namespace }}"} == 1)
      for: {{ .for }}
      labels:
        severity: {{ .severity }}
        namespace: {{ $.Release.Namespace }}
        {{- with $.Values.prometheusRule.alertLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        summary: The Chiron operator is down or not scraped.
        description: >-
          Prometheus has had no successful scrape of the Chiron operator in
          {{ $.Release.Namespace }} for {{ .for }}. No pool is autoscaled while it is down, and
          the other Chiron alerts cannot fire.
        runbook_url: {{ $docs }}#chironoperatordown
    {{- end }}{{ end }}{{ end }}
{{- end }}
