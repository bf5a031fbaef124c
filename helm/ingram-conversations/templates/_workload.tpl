{{/*
Per-component resources. Every template here takes (dict "root" $ "key" "<values key>").
*/}}

{{/* Non-secret env of one component, as a flat map (the ConfigMap's data). */}}
{{- define "ic.configData" -}}
{{- $root := .root -}}
{{- $v := index $root.Values .key -}}
{{- $meta := include "ic.meta" . | fromYaml -}}
{{- $c := $root.Values.config -}}
LOG_LEVEL: {{ $c.logLevel | quote }}
{{- if ne .key "gateway" }}
REDIS_PREFIX: {{ $c.redisPrefix | quote }}
{{- with $c.redisClusterNodes }}
REDIS_CLUSTER_NODES: {{ join "," . | quote }}
{{- end }}
{{- end }}
SERVICE_VERSION: {{ default (include "ic.imageTag" $root) $c.serviceVersion | quote }}
DATABASE_POOL_SIZE: {{ $v.databasePoolSize | quote }}
DATABASE_PREPARED_STATEMENTS: {{ $c.databasePreparedStatements | quote }}
SHUTDOWN_GRACE_PERIOD_MS: {{ include "ic.shutdownGracePeriodMs" . | quote }}
{{- with $root.Values.telemetry.otlpEndpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- if $root.Values.metrics.enabled }}
OTEL_PROMETHEUS_PORT: {{ $root.Values.metrics.port | quote }}
{{- end }}
{{- if $meta.http }}
HOST: "0.0.0.0"
PORT: {{ $v.containerPorts.http | quote }}
CORS_ORIGINS: {{ join "," $c.corsOrigins | quote }}
BODY_LIMIT: {{ $c.bodyLimit | quote }}
TOKEN_CACHE_TTL_MS: {{ $c.tokenCacheTtlMs | quote }}
RATE_LIMIT_REQUESTS_PER_MINUTE: {{ $c.rateLimit.requestsPerMinute | quote }}
RATE_LIMIT_TURNS_PER_MINUTE: {{ $c.rateLimit.turnsPerMinute | quote }}
HTTP_KEEP_ALIVE_TIMEOUT_MS: {{ $c.http.keepAliveTimeoutMs | quote }}
HTTP_HEADERS_TIMEOUT_MS: {{ $c.http.headersTimeoutMs | quote }}
HTTP_REQUEST_TIMEOUT_MS: {{ $c.http.requestTimeoutMs | quote }}
{{- else }}
HEALTH_PORT: {{ $v.containerPorts.health | quote }}
{{- end }}
{{- if and (eq .key "responsesApi") $v.runTurns.enabled }}
{{- /* API pods that also run the turns they accept (EagerTurns); traces keep the API's service name. */}}
RESPONSES_ROLE: "all"
EAGER_TURNS: "true"
OTEL_SERVICE_NAME: "ic-responses-api"
WORKER_CONCURRENCY: {{ $v.runTurns.concurrency | quote }}
WORKER_LOCK_DURATION_MS: {{ $root.Values.responsesWorker.lockDurationMs | quote }}
{{- else }}
{{- with $meta.role }}
RESPONSES_ROLE: {{ . | quote }}
{{- end }}
{{- end }}
{{- if eq .key "gateway" }}
CONSOLE_ENABLED: {{ $root.Values.console.enabled | quote }}
{{- end }}
{{- if eq .key "responsesApi" }}
STREAM_KEEPALIVE_MS: {{ $v.streamKeepaliveMs | quote }}
STREAM_HEAD_HOLD_MS: {{ $v.streamHeadHoldMs | quote }}
SYNC_WAIT_MS: {{ $v.syncWaitMs | quote }}
{{- end }}
{{- if has .key (list "responsesApi" "responsesWorker") }}
RUN_EVENTS_TTL_SECONDS: {{ $c.runEvents.ttlSeconds | quote }}
RUN_EVENTS_FINISHED_TTL_SECONDS: {{ $c.runEvents.finishedTtlSeconds | quote }}
{{- end }}
{{- if eq .key "responsesWorker" }}
WORKER_CONCURRENCY: {{ $v.concurrency | quote }}
WORKER_LOCK_DURATION_MS: {{ $v.lockDurationMs | quote }}
{{- end }}
{{- if eq .key "titler" }}
TITLER_MODE: {{ $v.mode | quote }}
TITLER_MODEL: {{ $v.model | quote }}
TITLER_CONCURRENCY: {{ $v.concurrency | quote }}
{{- end }}
{{- if has .key (list "responsesApi" "responsesWorker" "titler") }}
MODEL_ADAPTER: {{ $root.Values.model.adapter | quote }}
{{- with $root.Values.model.baseUrl }}
MODEL_BASE_URL: {{ . | quote }}
{{- end }}
{{- with $root.Values.model.map }}
MODEL_MAP: {{ toJson . | quote }}
{{- end }}
MODEL_TIMEOUT_MS: {{ $root.Values.model.timeoutMs | quote }}
{{- if ne .key "titler" }}
MODEL_BACKOFF_BUDGET_MS: {{ $root.Values.model.backoffBudgetMs | quote }}
{{- end }}
MODEL_RATE_LIMIT_PACING: {{ $root.Values.model.rateLimitPacing | quote }}
MODEL_CONTEXT_TOKENS: {{ $root.Values.model.contextTokens | quote }}
{{- end }}
{{- end -}}

{{/*
SHUTDOWN_GRACE_PERIOD_MS: the time between SIGTERM and the kubelet's SIGKILL. The grace period starts
with the preStop hook, so an HTTP component's preStop sleep comes off it; the service keeps its own
reserve for exiting within what is left.
*/}}
{{- define "ic.shutdownGracePeriodMs" -}}
{{- $v := index .root.Values .key -}}
{{- $meta := include "ic.meta" . | fromYaml -}}
{{- $preStop := ternary (int $v.preStopSleepSeconds) 0 (eq (toString $meta.http) "true") -}}
{{- mul (sub (int $v.terminationGracePeriodSeconds) $preStop) 1000 -}}
{{- end -}}

{{- define "ic.configmap" -}}
{{- $meta := include "ic.meta" . | fromYaml -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $meta.name }}
  namespace: {{ .root.Release.Namespace | quote }}
  labels:
    {{- include "ic.componentLabels" (dict "root" .root "suffix" $meta.suffix) | nindent 4 }}
  {{- include "ic.annotations" (dict "root" .root) }}
data:
  {{- include "ic.configData" . | nindent 2 }}
{{- end -}}

{{/* Secret env entries of one component (secretKeyRef into the chart's or the existing Secret). */}}
{{- define "ic.secretEnv" -}}
{{- $root := .root -}}
{{- $meta := include "ic.meta" . | fromYaml -}}
{{- $secret := include "ic.secretName" $root -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "ic.secretKey" (dict "root" $root "key" "databaseUrl") }}
{{- if ne .key "gateway" }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "ic.secretKey" (dict "root" $root "key" "redisUrl") }}
{{- end }}
{{- if $meta.http }}
- name: CURSOR_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "ic.secretKey" (dict "root" $root "key" "cursorSecret") }}
{{- end }}
{{- if or (has .key (list "responsesWorker" "titler")) (and (eq .key "responsesApi") (index $root.Values .key).runTurns.enabled) }}
- name: MODEL_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ include "ic.secretKey" (dict "root" $root "key" "modelApiKey") }}
      optional: true
{{- end }}
{{- end -}}

{{/* Downward-API env and the OpenTelemetry resource attributes built from it. */}}
{{- define "ic.podEnv" -}}
{{- $meta := include "ic.meta" . | fromYaml -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- $attrs := list "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" (printf "k8s.deployment.name=%s" $meta.name) -}}
{{- range $k, $val := .root.Values.telemetry.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%v" $k $val) -}}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- end -}}

{{- define "ic.deployment" -}}
{{- $root := .root -}}
{{- $v := index $root.Values .key -}}
{{- $meta := include "ic.meta" . | fromYaml -}}
{{- $portName := ternary "http" "health" (eq (toString $meta.http) "true") -}}
{{- $port := ternary $v.containerPorts.http $v.containerPorts.health (eq (toString $meta.http) "true") -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $meta.name }}
  namespace: {{ $root.Release.Namespace | quote }}
  labels:
    {{- include "ic.componentLabels" (dict "root" $root "suffix" $meta.suffix) | nindent 4 }}
  {{- include "ic.annotations" (dict "root" $root) }}
spec:
  {{- if not (or $v.autoscaling.enabled (include "ic.kedaEnabled" $v)) }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "ic.componentSelectorLabels" (dict "root" $root "suffix" $meta.suffix) | nindent 6 }}
  strategy:
    {{- toYaml $v.updateStrategy | nindent 4 }}
  template:
    metadata:
      labels:
        {{- include "ic.componentLabels" (dict "root" $root "suffix" $meta.suffix) | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "ic.configData" . | sha256sum }}
        checksum/secret: {{ include "ic.secretChecksum" $root }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "ic.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
      {{- with (include "ic.imagePullSecrets" $root) }}
      {{- . | nindent 6 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . | quote }}
      {{- end }}
      {{- if $v.affinity }}
      affinity:
        {{- toYaml $v.affinity | nindent 8 }}
      {{- else if $v.podAntiAffinityPreset }}
      affinity:
        {{- include "ic.antiAffinity" (dict "root" $root "suffix" $meta.suffix "preset" $v.podAntiAffinityPreset) | nindent 8 }}
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $meta.suffix }}
          image: {{ include "ic.image" (dict "root" $root "image" $v.image) | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          {{- with $v.command }}
          command:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          args:
            {{- if $v.args }}
            {{- toYaml $v.args | nindent 12 }}
            {{- else }}
            - node
            - {{ $meta.script }}
            {{- end }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          ports:
            - name: {{ $portName }}
              containerPort: {{ $port }}
              protocol: TCP
            {{- if $root.Values.metrics.enabled }}
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
              protocol: TCP
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ $meta.name }}
            {{- with $v.extraEnvVarsCM }}
            - configMapRef:
                name: {{ tpl . $root }}
            {{- end }}
            {{- with $v.extraEnvVarsSecret }}
            - secretRef:
                name: {{ tpl . $root }}
            {{- end }}
          env:
            {{- include "ic.secretEnv" . | nindent 12 }}
            {{- include "ic.podEnv" . | nindent 12 }}
            {{- with $v.extraEnvVars }}
            {{- tpl (toYaml .) $root | nindent 12 }}
            {{- end }}
          {{- if $v.startupProbe.enabled }}
          startupProbe:
            {{- include "ic.probe" (dict "probe" $v.startupProbe "path" "/healthz" "port" $portName) | nindent 12 }}
          {{- end }}
          {{- if $v.livenessProbe.enabled }}
          livenessProbe:
            {{- include "ic.probe" (dict "probe" $v.livenessProbe "path" "/healthz" "port" $portName) | nindent 12 }}
          {{- end }}
          {{- if $v.readinessProbe.enabled }}
          readinessProbe:
            {{- include "ic.probe" (dict "probe" $v.readinessProbe "path" "/readyz" "port" $portName) | nindent 12 }}
          {{- end }}
          {{- if and $meta.http (gt (int $v.preStopSleepSeconds) 0) }}
          lifecycle:
            preStop:
              exec:
                command: ["sleep", {{ $v.preStopSleepSeconds | quote }}]
          {{- end }}
          {{- with $v.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $root.Values.tmpVolume.sizeLimit }}
{{- end -}}

{{/* ClusterIP Service of an HTTP component (also exposes /metrics when enabled). */}}
{{- define "ic.service" -}}
{{- $root := .root -}}
{{- $v := index $root.Values .key -}}
{{- $meta := include "ic.meta" . | fromYaml -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ $meta.name }}
  namespace: {{ $root.Release.Namespace | quote }}
  labels:
    {{- include "ic.componentLabels" (dict "root" $root "suffix" $meta.suffix) | nindent 4 }}
  {{- include "ic.annotations" (dict "root" $root "extra" $v.service.annotations) }}
spec:
  type: {{ $v.service.type }}
  selector:
    {{- include "ic.componentSelectorLabels" (dict "root" $root "suffix" $meta.suffix) | nindent 4 }}
  ports:
    - name: http
      port: {{ $v.service.port }}
      targetPort: http
      protocol: TCP
    {{- if $root.Values.metrics.enabled }}
    - name: metrics
      port: {{ $root.Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
    {{- end }}
{{- end -}}

{{/* Headless Service that only exists so a ServiceMonitor can find a worker's /metrics. */}}
{{- define "ic.metricsService" -}}
{{- $root := .root -}}
{{- $meta := include "ic.meta" . | fromYaml -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ printf "%s-metrics" $meta.name }}
  namespace: {{ $root.Release.Namespace | quote }}
  labels:
    {{- include "ic.componentLabels" (dict "root" $root "suffix" $meta.suffix) | nindent 4 }}
  {{- include "ic.annotations" (dict "root" $root) }}
spec:
  type: ClusterIP
  clusterIP: None
  selector:
    {{- include "ic.componentSelectorLabels" (dict "root" $root "suffix" $meta.suffix) | nindent 4 }}
  ports:
    - name: metrics
      port: {{ $root.Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
{{- end -}}

{{- define "ic.hpa" -}}
{{- $root := .root -}}
{{- $v := index $root.Values .key -}}
{{- $a := $v.autoscaling -}}
{{- $meta := include "ic.meta" . | fromYaml -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $meta.name }}
  namespace: {{ $root.Release.Namespace | quote }}
  labels:
    {{- include "ic.componentLabels" (dict "root" $root "suffix" $meta.suffix) | nindent 4 }}
  {{- include "ic.annotations" (dict "root" $root) }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $meta.name }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    {{- if $a.targetCPU }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPU }}
    {{- end }}
    {{- if $a.targetMemory }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ $a.targetMemory }}
    {{- end }}
    {{- with $a.metrics }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* "true" when a component's values turn on KEDA (only responsesWorker has a keda block), else "". */}}
{{- define "ic.kedaEnabled" -}}
{{- if dig "keda" "enabled" false . }}true{{ end -}}
{{- end -}}

{{/*
KEDA ScaledObject: scales the workers on demand for turn slots (turns waiting plus turns running)
rather than CPU, which stays low while turns wait on the model. KEDA creates and owns the HPA.
*/}}
{{- define "ic.scaledObject" -}}
{{- $root := .root -}}
{{- $v := index $root.Values .key -}}
{{- $k := $v.keda -}}
{{- $meta := include "ic.meta" . | fromYaml -}}
{{- $selector := default (printf "namespace=%q, service=~%q" $root.Release.Namespace (printf "%s-.*" (include "ic.fullname" $root))) $k.seriesSelector -}}
{{- $perReplica := default (include "ic.workerTurnSlots" $root | int) (int $k.turnsPerReplica) -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ $meta.name }}
  namespace: {{ $root.Release.Namespace | quote }}
  labels:
    {{- include "ic.componentLabels" (dict "root" $root "suffix" $meta.suffix) | nindent 4 }}
  {{- include "ic.annotations" (dict "root" $root) }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $meta.name }}
  minReplicaCount: {{ $k.minReplicas }}
  maxReplicaCount: {{ $k.maxReplicas }}
  pollingInterval: {{ $k.pollingInterval }}
  cooldownPeriod: {{ $k.cooldownPeriod }}
  {{- with $k.behavior }}
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        {{- toYaml . | nindent 8 }}
  {{- end }}
  triggers:
    # Demand: desired pods = (waiting + running turns) / turnsPerReplica.
    - type: prometheus
      name: turn-demand
      metricType: AverageValue
      metadata:
        serverAddress: {{ $k.serverAddress | quote }}
        query: {{ printf "(max(ic_turns_waiting{%s}) or vector(0)) + (sum(ic_worker_turns_in_flight{%s}) or vector(0))" $selector $selector | quote }}
        threshold: {{ $perReplica | quote }}
        activationThreshold: "0"
      {{- with $k.authenticationRef }}
      authenticationRef:
        name: {{ . }}
      {{- end }}
    {{- if gt (int $k.oldestWaitingSeconds) 0 }}
    # Backstop: while the oldest waiting turn is older than the target, scale out in proportion.
    - type: prometheus
      name: oldest-waiting-turn
      metricType: Value
      metadata:
        serverAddress: {{ $k.serverAddress | quote }}
        query: {{ printf "max(ic_turn_oldest_waiting_age_seconds{%s}) or vector(0)" $selector | quote }}
        threshold: {{ $k.oldestWaitingSeconds | quote }}
      {{- with $k.authenticationRef }}
      authenticationRef:
        name: {{ . }}
      {{- end }}
    {{- end }}
{{- end -}}

{{- define "ic.pdb" -}}
{{- $root := .root -}}
{{- $v := index $root.Values .key -}}
{{- $meta := include "ic.meta" . | fromYaml -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $meta.name }}
  namespace: {{ $root.Release.Namespace | quote }}
  labels:
    {{- include "ic.componentLabels" (dict "root" $root "suffix" $meta.suffix) | nindent 4 }}
  {{- include "ic.annotations" (dict "root" $root) }}
spec:
  {{- if not (eq (toString $v.pdb.minAvailable) "") }}
  minAvailable: {{ $v.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $v.pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "ic.componentSelectorLabels" (dict "root" $root "suffix" $meta.suffix) | nindent 6 }}
{{- end -}}

{{/* Everything one long-running component needs, as separate YAML documents. */}}
{{- define "ic.component" -}}
{{- $root := .root -}}
{{- $v := index $root.Values .key -}}
{{- $meta := include "ic.meta" . | fromYaml -}}
{{ include "ic.configmap" . }}
---
{{ include "ic.deployment" . }}
{{- if $meta.http }}
---
{{ include "ic.service" . }}
{{- else if $root.Values.metrics.enabled }}
---
{{ include "ic.metricsService" . }}
{{- end }}
{{- if $v.autoscaling.enabled }}
---
{{ include "ic.hpa" . }}
{{- end }}
{{- if include "ic.kedaEnabled" $v }}
---
{{ include "ic.scaledObject" . }}
{{- end }}
{{- if $v.pdb.create }}
---
{{ include "ic.pdb" . }}
{{- end }}
{{- end -}}
