{{/*
Names, labels and images shared by every template.
*/}}

{{- define "ic.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Resource name prefix. The longest name is "<prefix>-responses-worker-metrics" (a Service, at most 63
characters), so the prefix is cut to 38.
*/}}
{{- define "ic.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 38 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 38 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 38 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ic.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "ic.labels" -}}
helm.sh/chart: {{ include "ic.chart" . }}
{{ include "ic.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ingram-conversations
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "ic.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ic.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
metadata.annotations from commonAnnotations plus an optional extra dict: (dict "root" $ "extra" $dict).
Renders nothing when both are empty; call it as `  {{- include "ic.annotations" … }}` right under metadata.
*/}}
{{- define "ic.annotations" -}}
{{- $all := merge (deepCopy (default (dict) .extra)) (deepCopy (default (dict) .root.Values.commonAnnotations)) -}}
{{- with $all }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end -}}

{{/*
Static facts about each long-running component: the values key, the resource name suffix, the entry
point inside the image, and whether it serves HTTP (with a Service) or is a worker (health port only).
*/}}
{{- define "ic.componentMeta" -}}
gateway:
  suffix: gateway
  script: services/api-gateway/dist/main.js
  http: true
responsesApi:
  suffix: responses-api
  script: services/responses/dist/main.js
  http: true
  role: api
responsesWorker:
  suffix: responses-worker
  script: services/responses/dist/main.js
  http: false
  role: worker
titler:
  suffix: titler
  script: services/titler/dist/main.js
  http: false
{{- end -}}

{{/* The long-running components, in render order. */}}
{{- define "ic.componentKeys" -}}
gateway responsesApi responsesWorker titler
{{- end -}}

{{/* Component context: (dict "root" $ "key" "gateway") → YAML of {name, suffix, script, http, role} */}}
{{- define "ic.meta" -}}
{{- $meta := index (include "ic.componentMeta" .root | fromYaml) .key -}}
{{- $_ := set $meta "name" (printf "%s-%s" (include "ic.fullname" .root) $meta.suffix) -}}
{{- toYaml $meta -}}
{{- end -}}

{{/* Labels of one component: (dict "root" $ "suffix" "gateway") */}}
{{- define "ic.componentLabels" -}}
{{ include "ic.labels" .root }}
app.kubernetes.io/component: {{ .suffix }}
{{- end -}}

{{- define "ic.componentSelectorLabels" -}}
{{ include "ic.selectorLabels" .root }}
app.kubernetes.io/component: {{ .suffix }}
{{- end -}}

{{/*
Image reference of a component: (dict "root" $ "image" <component image block>). Empty component fields
inherit from .Values.image; global.imageRegistry wins over both registries; a digest wins over the tag.
*/}}
{{- define "ic.image" -}}
{{- $root := .root -}}
{{- $img := default (dict) .image -}}
{{- $registry := coalesce $root.Values.global.imageRegistry (get $img "registry") $root.Values.image.registry -}}
{{- $repository := coalesce (get $img "repository") $root.Values.image.repository -}}
{{- $tag := coalesce (get $img "tag") $root.Values.image.tag $root.Chart.AppVersion | toString -}}
{{- $digest := coalesce (get $img "digest") $root.Values.image.digest -}}
{{- $ref := $repository -}}
{{- if $registry -}}{{- $ref = printf "%s/%s" $registry $repository -}}{{- end -}}
{{- if $digest -}}
{{- printf "%s@%s" $ref $digest -}}
{{- else -}}
{{- printf "%s:%s" $ref $tag -}}
{{- end -}}
{{- end -}}

{{/* The image tag in use (for SERVICE_VERSION). */}}
{{- define "ic.imageTag" -}}
{{- coalesce .Values.image.tag .Chart.AppVersion | toString -}}
{{- end -}}

{{- define "ic.imagePullSecrets" -}}
{{- $secrets := concat (default (list) .Values.global.imagePullSecrets) (default (list) .Values.image.pullSecrets) | uniq -}}
{{- if $secrets -}}
imagePullSecrets:
{{- range $secrets }}
  - name: {{ if kindIs "map" . }}{{ .name }}{{ else }}{{ . }}{{ end }}
{{- end }}
{{- end -}}
{{- end -}}

{{- define "ic.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ic.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding DATABASE_URL, REDIS_URL, CURSOR_SECRET and MODEL_API_KEY. */}}
{{- define "ic.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- tpl .Values.secrets.existingSecret . -}}
{{- else -}}
{{- include "ic.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* Key names inside that Secret: the chart-created Secret always uses the defaults. */}}
{{- define "ic.secretKey" -}}
{{- $root := .root -}}
{{- if $root.Values.secrets.existingSecret -}}
{{- index $root.Values.secrets.existingSecretKeys .key -}}
{{- else -}}
{{- index (dict "databaseUrl" "database-url" "redisUrl" "redis-url" "cursorSecret" "cursor-secret" "modelApiKey" "model-api-key") .key -}}
{{- end -}}
{{- end -}}

{{/* data: block of the chart-created Secret (shared by the Secret, the migrations hook Secret and checksums). */}}
{{- define "ic.secretData" -}}
{{- $s := .Values.secrets -}}
database-url: {{ $s.databaseUrl | b64enc | quote }}
redis-url: {{ $s.redisUrl | b64enc | quote }}
cursor-secret: {{ $s.cursorSecret | b64enc | quote }}
{{- if $s.modelApiKey }}
model-api-key: {{ $s.modelApiKey | b64enc | quote }}
{{- end }}
{{- end -}}

{{/*
checksum/secret: the chart-created Secret's content, or for an existing Secret its name and keys (the
chart cannot see its content; after rotating it, run `kubectl rollout restart`).
*/}}
{{- define "ic.secretChecksum" -}}
{{- if .Values.secrets.existingSecret -}}
{{- printf "%s/%s" (include "ic.secretName" .) (toJson .Values.secrets.existingSecretKeys) | sha256sum -}}
{{- else -}}
{{- include "ic.secretData" . | sha256sum -}}
{{- end -}}
{{- end -}}

{{/* Renders a probe block: (dict "probe" $v.livenessProbe "path" "/healthz" "port" "http") */}}
{{- define "ic.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
successThreshold: {{ .probe.successThreshold }}
{{- end -}}

{{/* Pod anti-affinity preset across nodes: (dict "root" $ "suffix" ... "preset" soft|hard) */}}
{{- define "ic.antiAffinity" -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "ic.componentSelectorLabels" . | fromYaml)) -}}
podAntiAffinity:
{{- if eq .preset "hard" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    - {{- toYaml $term | nindent 6 }}
{{- else }}
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        {{- toYaml $term | nindent 8 }}
{{- end }}
{{- end -}}

{{/* The TCP port of an http(s) URL: its explicit port, else 443 for https and 80 for http. */}}
{{- define "ic.urlPort" -}}
{{- $u := urlParse . -}}
{{- $host := $u.host -}}
{{- if and (regexMatch ":[0-9]+$" $host) (not (hasSuffix "]" $host)) -}}
{{- regexFind "[0-9]+$" $host -}}
{{- else if eq $u.scheme "https" -}}
443
{{- else -}}
80
{{- end -}}
{{- end -}}

{{/*
A memory quantity (768Mi, 1Gi, 512M, 2G, plain bytes) in MiB; 0 when absent or in another form.
*/}}
{{- define "ic.memoryMiB" -}}
{{- $q := toString (default "" .) -}}
{{- if regexMatch "^[0-9]+Gi$" $q -}}{{ mul (trimSuffix "Gi" $q | int64) 1024 }}
{{- else if regexMatch "^[0-9]+Mi$" $q -}}{{ trimSuffix "Mi" $q | int64 }}
{{- else if regexMatch "^[0-9]+G$" $q -}}{{ div (mul (trimSuffix "G" $q | int64) 1000000000) 1048576 }}
{{- else if regexMatch "^[0-9]+M$" $q -}}{{ div (mul (trimSuffix "M" $q | int64) 1000000) 1048576 }}
{{- else if regexMatch "^[0-9]+$" $q -}}{{ div ($q | int64) 1048576 }}
{{- else -}}0
{{- end -}}
{{- end -}}

{{/*
Turn slots of one worker pod: `responsesWorker.concurrency`, or with 0 (the worker derives it from
its heap: half of V8's heap limit at 256 KB a turn) an estimate from the memory limit. Node sizes the
heap from the container's limit; the estimate takes a quarter of the limit as heap, at most 2 GiB (the
low end of what Node 20–24 give), so a 768Mi pod counts as 384 slots: fewer slots than the worker may
derive means more pods, never turns left waiting. 0 when it cannot tell (no memory limit in whole
Mi/Gi/M/G or bytes).
*/}}
{{- define "ic.workerTurnSlots" -}}
{{- $v := .Values.responsesWorker -}}
{{- if gt (int $v.concurrency) 0 -}}{{ int $v.concurrency }}
{{- else -}}
{{- $limitMiB := include "ic.memoryMiB" (dig "limits" "memory" "" ($v.resources | default dict)) | int64 -}}
{{- if gt $limitMiB 0 -}}{{ max 8 (mul (div (min 2048 (div $limitMiB 4)) 2) 4) }}{{- else -}}0{{- end -}}
{{- end -}}
{{- end -}}
