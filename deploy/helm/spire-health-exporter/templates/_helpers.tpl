{{- define "she.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "she.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "she.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "she.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "she.selectorLabels" -}}
app.kubernetes.io/name: {{ include "she.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "she.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "she.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "she.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "she.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Cgroup metrics need the agent's pid, so they depend on agentProcess. */}}
{{- define "she.cgroupEnabled" -}}
{{- if and .Values.agentProcess.enabled .Values.agentCgroup.enabled }}true{{ end }}
{{- end }}

{{- define "she.config" -}}
{{- $probes := deepCopy .Values.probes }}
{{- if .Values.agentAdminSocket.enabled }}
{{- $admin := printf "unix://%s/%s" .Values.agentAdminSocket.mountPath .Values.agentAdminSocket.socketName }}
{{- $_ := set $probes "debug_get_info" (mergeOverwrite (dict "socket" $admin) (get $probes "debug_get_info" | default dict)) }}
{{- end }}
{{- $c := dict
  "workload_api" (dict "socket" (printf "unix://%s/%s" .Values.agentSocket.mountPath .Values.agentSocket.socketName))
  "probes" $probes
  "agent" (dict
    "proc_root" "/proc"
    "process" (dict "enabled" .Values.agentProcess.enabled "name" .Values.agentProcess.name "cmdline_pattern" .Values.agentProcess.cmdlinePattern)
    "cgroup" (dict "enabled" (eq (include "she.cgroupEnabled" .) "true") "root" "/host/sys/fs/cgroup")
    "health" (dict "url" ""))
  "web" (dict "listen_address" (printf ":%v" .Values.service.port))
  "log" (dict "level" .Values.logLevel "format" .Values.logFormat)
-}}
{{- mergeOverwrite $c (deepCopy .Values.config) | toYaml }}
{{- end }}

{{- define "she.image" -}}
{{- $repository := .Values.image.repository }}
{{- with .Values.image.registry }}{{ $repository = printf "%s/%s" . $repository }}{{ end }}
{{- $ref := printf "%s:%s" $repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- with .Values.image.digest }}{{ $ref = printf "%s@%s" $ref . }}{{ end }}
{{- $ref }}
{{- end }}

{{/* /healthz over the scheme the web config serves; only the port when the kubelet could not
authenticate (basic auth). */}}
{{- define "she.healthCheck" -}}
{{- if .Values.webConfig.basicAuth }}
tcpSocket:
  port: metrics
{{- else }}
httpGet:
  path: /healthz
  port: metrics
  scheme: {{ (.Values.podMonitor.enabled | ternary .Values.podMonitor.scheme .Values.serviceMonitor.scheme) | upper }}
{{- end }}
{{- end }}

{{/* The parts both monitors share: scheme, timeouts, auth, the node relabeling and the user's. */}}
{{- define "she.monitorEndpoint" -}}
port: metrics
interval: {{ .interval }}
scrapeTimeout: {{ .scrapeTimeout }}
scheme: {{ .scheme }}
{{- with .tlsConfig }}
tlsConfig:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .basicAuth }}
basicAuth:
  {{- toYaml . | nindent 2 }}
{{- end }}
relabelings:
  # Dashboards and alerts name the node by this label.
  - sourceLabels: [__meta_kubernetes_pod_node_name]
    targetLabel: node
  {{- with .relabelings }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .metricRelabelings }}
metricRelabelings:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
