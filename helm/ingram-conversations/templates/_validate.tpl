{{/*
Checks configuration that Kubernetes would accept but the services would not, and fails the render
with every problem listed at once. The services validate their env again at boot (libs/config), so
anything the chart cannot see (the content of an existingSecret) is still caught, just later.
*/}}
{{- define "ic.validate" -}}
{{- $errors := list -}}
{{- $s := .Values.secrets -}}

{{- /* Secrets: one source for DATABASE_URL, REDIS_URL and CURSOR_SECRET. */ -}}
{{- if $s.existingSecret -}}
  {{- range $k := list "databaseUrl" "redisUrl" "cursorSecret" "modelApiKey" -}}
    {{- if not (index $s.existingSecretKeys $k) -}}
      {{- $errors = append $errors (printf "secrets.existingSecretKeys.%s must name a key of secrets.existingSecret" $k) -}}
    {{- end -}}
  {{- end -}}
  {{- if or $s.databaseUrl $s.redisUrl $s.cursorSecret $s.modelApiKey -}}
    {{- $errors = append $errors "secrets.existingSecret is set: leave secrets.databaseUrl, redisUrl, cursorSecret and modelApiKey empty (they would be ignored)" -}}
  {{- end -}}
{{- else -}}
  {{- if not $s.databaseUrl -}}
    {{- $errors = append $errors "no DATABASE_URL source: set secrets.existingSecret (with a database-url key) or secrets.databaseUrl" -}}
  {{- else if not (regexMatch "^postgres(ql)?://" $s.databaseUrl) -}}
    {{- $errors = append $errors "secrets.databaseUrl must be a postgres:// or postgresql:// URL" -}}
  {{- end -}}
  {{- if not $s.redisUrl -}}
    {{- $errors = append $errors "no REDIS_URL source: Redis is required in Kubernetes (the in-process queue cannot span pods); set secrets.existingSecret (with a redis-url key) or secrets.redisUrl" -}}
  {{- else if not (regexMatch "^rediss?://" $s.redisUrl) -}}
    {{- $errors = append $errors "secrets.redisUrl must be a redis:// or rediss:// URL" -}}
  {{- end -}}
  {{- if lt (len $s.cursorSecret) 16 -}}
    {{- $errors = append $errors "secrets.cursorSecret must be at least 16 characters (it signs pagination cursors); generate one with `openssl rand -hex 32`" -}}
  {{- else if eq $s.cursorSecret "ic-dev-cursor-secret-change-me" -}}
    {{- $errors = append $errors "secrets.cursorSecret is the built-in development default; generate one with `openssl rand -hex 32`" -}}
  {{- end -}}
{{- end -}}

{{- /* Shared configuration. */ -}}
{{- $levels := list "fatal" "error" "warn" "info" "debug" "trace" "silent" -}}
{{- if not (has .Values.config.logLevel $levels) -}}
  {{- $errors = append $errors (printf "config.logLevel must be one of %s" (join ", " $levels)) -}}
{{- end -}}
{{- if not (regexMatch "^[A-Za-z0-9_-]+$" (toString .Values.config.redisPrefix)) -}}
  {{- $errors = append $errors "config.redisPrefix may only contain letters, digits, _ and -" -}}
{{- end -}}
{{- range .Values.config.redisClusterNodes -}}
  {{- if not (regexMatch "^[^\\s:]+:[0-9]{1,5}$" (toString .)) -}}
    {{- $errors = append $errors (printf "config.redisClusterNodes: %v must be host:port" .) -}}
  {{- end -}}
{{- end -}}
{{- if not .Values.config.corsOrigins -}}
  {{- $errors = append $errors "config.corsOrigins must list at least one origin (\"*\" allows any)" -}}
{{- end -}}
{{- $adapter := toString .Values.model.adapter -}}
{{- if not (has $adapter (list "openai-compatible" "development")) -}}
  {{- $errors = append $errors "model.adapter must be openai-compatible or development" -}}
{{- else if and (eq $adapter "openai-compatible") (not .Values.model.baseUrl) -}}
  {{- $errors = append $errors "model.baseUrl is required: set it to an OpenAI-compatible upstream, e.g. https://llm-gateway.internal/v1 (or set model.adapter=development for the built-in development model, which answers with canned text)" -}}
{{- else if and (eq $adapter "development") .Values.model.baseUrl -}}
  {{- $errors = append $errors "model.adapter is development, which ignores model.baseUrl: empty model.baseUrl or set model.adapter=openai-compatible" -}}
{{- end -}}
{{- with .Values.model.baseUrl -}}
  {{- if not (regexMatch "^https?://" .) -}}
    {{- $errors = append $errors "model.baseUrl must be an http:// or https:// URL" -}}
  {{- end -}}
{{- end -}}
{{- if not (kindIs "map" .Values.model.map) -}}
  {{- $errors = append $errors "model.map must be a map of public model name to upstream model name" -}}
{{- else -}}
  {{- range $k, $v := .Values.model.map -}}
    {{- if not (kindIs "string" $v) -}}
      {{- $errors = append $errors (printf "model.map.%s must be a string (the upstream model name)" $k) -}}
    {{- end -}}
  {{- end -}}
{{- end -}}
{{- with .Values.telemetry.otlpEndpoint -}}
  {{- if not (regexMatch "^https?://" .) -}}
    {{- $errors = append $errors "telemetry.otlpEndpoint must be an http(s):// OTLP/HTTP base URL, e.g. http://otel-collector:4318" -}}
  {{- end -}}
{{- end -}}
{{- range $feature := list "serviceMonitor" "prometheusRule" "grafanaDashboard" -}}
  {{- if and (index $.Values.metrics $feature).enabled (not $.Values.metrics.enabled) -}}
    {{- $errors = append $errors (printf "metrics.%s.enabled needs metrics.enabled (nothing serves /metrics otherwise)" $feature) -}}
  {{- end -}}
{{- end -}}
{{- $alerts := list -}}
{{- range $group := (.Files.Get "files/alerts.yaml" | fromYaml).groups -}}
  {{- range $rule := $group.rules -}}
    {{- $alerts = append $alerts $rule.alert -}}
  {{- end -}}
{{- end -}}
{{- range $name := .Values.metrics.prometheusRule.disabledAlerts -}}
  {{- if not (has $name $alerts) -}}
    {{- $errors = append $errors (printf "metrics.prometheusRule.disabledAlerts: %s is not an alert of files/alerts.yaml (%s)" $name (join ", " $alerts)) -}}
  {{- end -}}
{{- end -}}
{{- if not (or .Values.image.repository .Values.image.digest) -}}
  {{- $errors = append $errors "image.repository is required" -}}
{{- end -}}

{{- /* Components. */ -}}
{{- if not (has .Values.titler.mode (list "message" "model")) -}}
  {{- $errors = append $errors "titler.mode must be message or model" -}}
{{- end -}}
{{- if lt (int .Values.responsesWorker.concurrency) 0 -}}
  {{- $errors = append $errors "responsesWorker.concurrency must be 0 (derived from the heap) or more" -}}
{{- end -}}
{{- if and .Values.responsesWorker.keda.enabled (not (int .Values.responsesWorker.keda.turnsPerReplica)) (eq (include "ic.workerTurnSlots" .) "0") -}}
  {{- $errors = append $errors "responsesWorker.keda needs turnsPerReplica, a concurrency or a memory limit (resources.limits.memory, in whole Mi/Gi/M/G) to tell how many turns a pod holds" -}}
{{- end -}}
{{- range $key := splitList " " (include "ic.componentKeys" .) -}}
  {{- $v := index $.Values $key -}}
  {{- $a := $v.autoscaling -}}
  {{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) -}}
    {{- $errors = append $errors (printf "%s.autoscaling.minReplicas must not exceed maxReplicas" $key) -}}
  {{- end -}}
  {{- if and $a.enabled (not (or $a.targetCPU $a.targetMemory $a.metrics)) -}}
    {{- $errors = append $errors (printf "%s.autoscaling needs targetCPU, targetMemory or metrics" $key) -}}
  {{- end -}}
  {{- if $v.pdb.create -}}
    {{- $min := toString $v.pdb.minAvailable -}}
    {{- $max := toString $v.pdb.maxUnavailable -}}
    {{- if eq (ne $min "") (ne $max "") -}}
      {{- $errors = append $errors (printf "%s.pdb: set exactly one of minAvailable and maxUnavailable" $key) -}}
    {{- end -}}
  {{- end -}}
  {{- if not (has (toString $v.podAntiAffinityPreset) (list "" "soft" "hard")) -}}
    {{- $errors = append $errors (printf "%s.podAntiAffinityPreset must be soft, hard or empty" $key) -}}
  {{- end -}}
  {{- range $probe := list "livenessProbe" "startupProbe" -}}
    {{- if and (index $v $probe).enabled (ne (int (index $v $probe).successThreshold) 1) -}}
      {{- $errors = append $errors (printf "%s.%s.successThreshold must be 1" $key $probe) -}}
    {{- end -}}
  {{- end -}}
  {{- $graceMs := int (include "ic.shutdownGracePeriodMs" (dict "root" $ "key" $key)) -}}
  {{- if or (lt $graceMs 5000) (gt $graceMs 3600000) -}}
    {{- $errors = append $errors (printf "%s.terminationGracePeriodSeconds must leave 5 to 3600 s after the preStop sleep for the process to shut down (SHUTDOWN_GRACE_PERIOD_MS would be %d)" $key $graceMs) -}}
  {{- end -}}
{{- end -}}
{{- $keda := .Values.responsesWorker.keda -}}
{{- if $keda.enabled -}}
  {{- if .Values.responsesWorker.autoscaling.enabled -}}
    {{- $errors = append $errors "responsesWorker.keda.enabled and responsesWorker.autoscaling.enabled both scale the workers: turn the CPU HPA (autoscaling.enabled) off" -}}
  {{- end -}}
  {{- if not (regexMatch "^https?://" (toString $keda.serverAddress)) -}}
    {{- $errors = append $errors "responsesWorker.keda.serverAddress must be the http(s):// URL of the Prometheus KEDA queries, e.g. http://prometheus-operated.monitoring:9090" -}}
  {{- end -}}
  {{- if not .Values.metrics.enabled -}}
    {{- $errors = append $errors "responsesWorker.keda.enabled needs metrics.enabled (KEDA scales on the queue metrics the services export)" -}}
  {{- end -}}
  {{- if gt (int $keda.minReplicas) (int $keda.maxReplicas) -}}
    {{- $errors = append $errors "responsesWorker.keda.minReplicas must not exceed maxReplicas" -}}
  {{- end -}}
  {{- if lt (int $keda.maxReplicas) 1 -}}
    {{- $errors = append $errors "responsesWorker.keda.maxReplicas must be at least 1" -}}
  {{- end -}}
  {{- if or (lt (int $keda.turnsPerReplica) 0) (lt (int $keda.oldestWaitingSeconds) 0) -}}
    {{- $errors = append $errors "responsesWorker.keda.turnsPerReplica and oldestWaitingSeconds must not be negative" -}}
  {{- end -}}
{{- end -}}
{{- with .Values.config.runEvents -}}
  {{- if or (lt (int .ttlSeconds) 1) (lt (int .finishedTtlSeconds) 1) -}}
    {{- $errors = append $errors "config.runEvents.ttlSeconds and finishedTtlSeconds must be at least 1" -}}
  {{- end -}}
{{- end -}}
{{- if lt (int .Values.model.backoffBudgetMs) 0 -}}
  {{- $errors = append $errors "model.backoffBudgetMs must be 0 or more" -}}
{{- end -}}
{{- if lt (int .Values.titler.concurrency) 1 -}}
  {{- $errors = append $errors "titler.concurrency must be at least 1" -}}
{{- end -}}

{{- /* helm test. */ -}}
{{- with .Values.tests -}}
  {{- if and .tenantId (not (regexMatch "^ten_[0-9A-Za-z]{8,64}$" (toString .tenantId))) -}}
    {{- $errors = append $errors "tests.tenantId must be a ten_… id (or empty to create one)" -}}
  {{- end -}}
  {{- if ne (empty .tenantId) (empty .smithId) -}}
    {{- $errors = append $errors "tests.tenantId and tests.smithId go together: set both (a smith of that tenant) or neither" -}}
  {{- else if and .smithId (not (regexMatch "^smt_[0-9A-Za-z]{8,64}$" (toString .smithId))) -}}
    {{- $errors = append $errors "tests.smithId must be a smt_… id" -}}
  {{- end -}}
{{- end -}}

{{- /* NetworkPolicy. */ -}}
{{- if .Values.networkPolicy.enabled -}}
  {{- range $name, $rule := .Values.networkPolicy.egress -}}
    {{- range $rule.ports -}}
      {{- if or (not (regexMatch "^[0-9]+$" (toString .))) (lt (int .) 1) (gt (int .) 65535) -}}
        {{- $errors = append $errors (printf "networkPolicy.egress.%s.ports must be port numbers (1-65535), not %v" $name .) -}}
      {{- end -}}
    {{- end -}}
  {{- end -}}
{{- end -}}

{{- /* Ingress. */ -}}
{{- if .Values.ingress.enabled -}}
  {{- if not .Values.ingress.hosts -}}
    {{- $errors = append $errors "ingress.hosts must list at least one host (\"\" matches any host)" -}}
  {{- end -}}
  {{- if not (hasPrefix "/" (toString .Values.ingress.responsesPath)) -}}
    {{- $errors = append $errors "ingress.responsesPath must start with /" -}}
  {{- end -}}
  {{- /* ingress-nginx closes a proxied connection that is silent for proxy-read-timeout seconds. */ -}}
  {{- with index (default (dict) .Values.ingress.annotations) "nginx.ingress.kubernetes.io/proxy-read-timeout" -}}
    {{- $readMs := mul (int (toString .)) 1000 -}}
    {{- if le $readMs (int $.Values.responsesApi.streamKeepaliveMs) -}}
      {{- $errors = append $errors "ingress proxy-read-timeout must exceed responsesApi.streamKeepaliveMs, or quiet SSE streams are cut off" -}}
    {{- end -}}
    {{- if le $readMs (int $.Values.responsesApi.syncWaitMs) -}}
      {{- $errors = append $errors "ingress proxy-read-timeout must exceed responsesApi.syncWaitMs, or long non-streaming responses end in a 504" -}}
    {{- end -}}
  {{- end -}}
{{- end -}}

{{- if $errors -}}
  {{- fail (printf "\n\ningram-conversations: invalid values:\n  - %s\n" (join "\n  - " $errors)) -}}
{{- end -}}
{{- end -}}
