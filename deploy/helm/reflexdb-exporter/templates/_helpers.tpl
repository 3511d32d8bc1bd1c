{{/* The chart's name, or nameOverride. */}}
{{- define "reflexdb-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of every resource: the release name, and the chart's unless it is in it. */}}
{{- define "reflexdb-exporter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels that select the pods; they never change once installed. */}}
{{- define "reflexdb-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reflexdb-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every resource. part-of=reflexdb is the ServiceMonitor's jobLabel: job="reflexdb", as prometheus/alerts.yml expects. */}}
{{- define "reflexdb-exporter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "reflexdb-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: reflexdb
{{- end }}

{{/* The image reference. */}}
{{- define "reflexdb-exporter.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.registry }}
{{- printf "%s/%s:%s" .Values.image.registry .Values.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The Secret that holds the API token, and its key. */}}
{{- define "reflexdb-exporter.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-token" (include "reflexdb-exporter.fullname" .)) }}
{{- end }}
{{- define "reflexdb-exporter.secretKey" -}}
{{- if .Values.existingSecret }}{{ .Values.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/* The config file: the user's config with api.token_file pointing at the mounted token. */}}
{{- define "reflexdb-exporter.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $api := get $config "api" | default dict }}
{{- $_ := set $api "token_file" (printf "/run/secrets/reflexdb/%s" (include "reflexdb-exporter.secretKey" .)) }}
{{- $_ := set $config "api" $api }}
{{- toYaml $config }}
{{- end }}

{{/* Whether basic auth guards every path, the probes included. */}}
{{- define "reflexdb-exporter.basicAuth" -}}
{{- if .Values.webConfig.basic_auth_users }}true{{ end }}
{{- end }}

{{/* A default probe: GET path, in HTTPS with TLS, a TCP check with basic auth. */}}
{{- define "reflexdb-exporter.probe" -}}
{{- if include "reflexdb-exporter.basicAuth" .root }}
tcpSocket:
  port: metrics
{{- else }}
httpGet:
  path: {{ .path }}
  port: metrics
  scheme: {{ ternary "HTTPS" "HTTP" (hasKey .root.Values.webConfig "tls_server_config") }}
{{- end }}
{{- end }}

{{/* The pod template of the Deployment (one shard) and of the StatefulSet (several). */}}
{{- define "reflexdb-exporter.podTemplate" -}}
metadata:
  labels:
    {{- include "reflexdb-exporter.labels" . | nindent 4 }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if or .Values.rollOnConfigChange .Values.podAnnotations }}
  annotations:
    {{- if .Values.rollOnConfigChange }}
    checksum/config: {{ include "reflexdb-exporter.config" . | sha256sum }}
    checksum/web-config: {{ toYaml .Values.webConfig | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  # The exporter never talks to the Kubernetes API.
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: exporter
      image: {{ include "reflexdb-exporter.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- if gt (int .Values.shards) 1 }}
      # The shard is the pod's ordinal, the number after the last "-" of its name; a shell
      # computes it (Kubernetes cannot substitute a computed value) and passes the args on.
      command:
        - /bin/sh
        - -c
        - exec reflexdb-exporter "$@" --shard="${POD_NAME##*-}"
        - reflexdb-exporter
      {{- end }}
      args:
        - --config.file=/etc/reflexdb/config.yaml
        - --web.listen-address=:{{ .Values.service.port }}
        {{- if .Values.webConfig }}
        - --web.config.file=/etc/reflexdb-web/web.yml
        {{- end }}
        {{- if gt (int .Values.shards) 1 }}
        - --total-shards={{ .Values.shards }}
        {{- end }}
        {{- with .Values.extraArgs }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      env:
        {{- if gt (int .Values.shards) 1 }}
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        {{- end }}
        # The root filesystem is read-only: do not try to write bytecode caches.
        - name: PYTHONDONTWRITEBYTECODE
          value: "1"
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: metrics
          containerPort: {{ .Values.service.port }}
          protocol: TCP
      livenessProbe:
        {{- if .Values.livenessProbe }}
        {{- toYaml .Values.livenessProbe | nindent 8 }}
        {{- else }}
        {{- include "reflexdb-exporter.probe" (dict "root" . "path" "/-/healthy") | trim | nindent 8 }}
        initialDelaySeconds: 5
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 6
        {{- end }}
      readinessProbe:
        {{- if .Values.readinessProbe }}
        {{- toYaml .Values.readinessProbe | nindent 8 }}
        {{- else }}
        {{- include "reflexdb-exporter.probe" (dict "root" . "path" "/-/ready") | trim | nindent 8 }}
        initialDelaySeconds: 2
        periodSeconds: 5
        timeoutSeconds: 5
        failureThreshold: 3
        {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/reflexdb
          readOnly: true
        - name: api-token
          mountPath: /run/secrets/reflexdb
          readOnly: true
        {{- if .Values.webConfig }}
        - name: web-config
          mountPath: /etc/reflexdb-web
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "reflexdb-exporter.fullname" . }}
    - name: api-token
      secret:
        secretName: {{ include "reflexdb-exporter.secretName" . }}
        defaultMode: 0440
    {{- if .Values.webConfig }}
    - name: web-config
      secret:
        secretName: {{ include "reflexdb-exporter.fullname" . }}-web-config
        defaultMode: 0440
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
