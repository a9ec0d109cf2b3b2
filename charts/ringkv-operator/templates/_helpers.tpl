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

{{/* RBAC rules of the operator in a namespace it manages (see rbac.yaml). */}}
{{- define "ringkv-operator.namespacedRules" }}
  - apiGroups: ["ringkv.io"]
    resources: ["kvclusters"]
    verbs: ["get", "list", "watch", "patch"]
  - apiGroups: ["ringkv.io"]
    resources: ["kvclusters/status"]
    verbs: ["get", "patch"]
  - apiGroups: ["ringkv.io"]
    resources: ["kvclusters/finalizers"]
    verbs: ["update"]
  - apiGroups: ["ringkv.io"]
    resources: ["kvbackups"]
    verbs: ["get", "list"]
  - apiGroups: ["ringkv.io"]
    resources: ["kvbackups/status"]
    verbs: ["patch"]
  - apiGroups: ["apps"]
    resources: ["statefulsets"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  - apiGroups: [""]
    resources: ["services", "serviceaccounts"]
    verbs: ["get", "list", "watch", "create", "patch"]
  - apiGroups: [""]
    resources: ["configmaps"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list", "delete"]
  - apiGroups: [""]
    resources: ["persistentvolumeclaims"]
    verbs: ["get", "list", "patch", "delete"]
  - apiGroups: ["policy"]
    resources: ["poddisruptionbudgets"]
    verbs: ["get", "list", "watch", "create", "patch"]
  - apiGroups: ["cert-manager.io"]
    resources: ["certificates", "issuers"]
    verbs: ["get", "create", "patch"]
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch"]
{{- end }}
{{- define "ringkv-operator.secretRules" }}
  # get by name only: no list or watch, so the operator never reads Secrets
  # it was not told about.
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["get", "create", "patch"]
{{- end }}
