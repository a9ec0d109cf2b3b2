{{/* Chart name, truncated for label values. */}}
{{- define "ringkv-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "ringkv-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "ringkv-operator.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "ringkv-operator.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "ringkv-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ringkv-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ringkv-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "ringkv-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ringkv-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ringkv-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ringkv-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Node image: nodeImage if set, else the operator's own (multi-binary) image. */}}
{{- define "ringkv-operator.nodeImage" -}}
{{- if .Values.nodeImage.repository }}
{{- printf "%s:%s" .Values.nodeImage.repository (default .Chart.AppVersion .Values.nodeImage.tag) }}
{{- else }}
{{- include "ringkv-operator.image" . }}
{{- end }}
{{- end }}

{{/* Watched namespaces as a JSON list: watchNamespaces plus the older single watchNamespace. */}}
{{- define "ringkv-operator.watchNamespaces" -}}
{{- $l := list }}
{{- range .Values.watchNamespaces }}{{- $l = append $l . }}{{- end }}
{{- with .Values.watchNamespace }}{{- if not (has . $l) }}{{- $l = append $l . }}{{- end }}{{- end }}
{{- toJson $l }}
{{- end }}
