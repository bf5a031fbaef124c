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
{{- if not .Values.config.corsOrigins -}}
  {{- $errors = append $errors "config.corsOrigins must list at least one origin (\"*\" allows any)" -}}
{{- end -}}
{{- with .Values.model.baseUrl -}}
  {{- if not (regexMatch "^https?://" .) -}}
    {{- $errors = append $errors "model.baseUrl must be an http:// or https:// URL (or empty for the built-in development model)" -}}
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
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
  {{- $errors = append $errors "metrics.serviceMonitor.enabled needs metrics.enabled (nothing serves /metrics otherwise)" -}}
{{- end -}}
{{- if not (or .Values.image.repository .Values.image.digest) -}}
  {{- $errors = append $errors "image.repository is required" -}}
{{- end -}}

{{- /* Components. */ -}}
{{- if not (has .Values.titler.mode (list "message" "model")) -}}
  {{- $errors = append $errors "titler.mode must be message or model" -}}
{{- end -}}
{{- if lt (int .Values.responsesWorker.concurrency) 1 -}}
  {{- $errors = append $errors "responsesWorker.concurrency must be at least 1" -}}
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
{{- end -}}
{{- if le (int .Values.responsesWorker.terminationGracePeriodSeconds) 60 -}}
  {{- $errors = append $errors "responsesWorker.terminationGracePeriodSeconds must exceed 60: on SIGTERM a worker drains in-flight turns for up to 60 s" -}}
{{- end -}}
{{- if lt (int .Values.titler.concurrency) 1 -}}
  {{- $errors = append $errors "titler.concurrency must be at least 1" -}}
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
