{{/* Chart name, truncated to a DNS label. */}}
{{- define "codemode.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, plus the chart name unless it already contains it. */}}
{{- define "codemode.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "codemode.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "codemode.labels" -}}
helm.sh/chart: {{ include "codemode.chart" . }}
app.kubernetes.io/name: {{ include "codemode.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: codemode
{{- end -}}

{{- define "codemode.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codemode.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "codemode.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codemode.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "codemode.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "codemode.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "codemode.redis.fullname" -}}
{{- printf "%s-redis" (include "codemode.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "codemode.redis.secretName" -}}
{{- default (include "codemode.redis.fullname" .) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{- define "codemode.redis.host" -}}
{{- printf "%s.%s.svc" (include "codemode.redis.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "codemode.image" -}}
{{- printf "%s:%s" .repository (toString .tag) -}}
{{- end -}}

{{/* The restricted container securityContext (Pod Security Standards "restricted"). */}}
{{- define "codemode.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Rules the operator needs in every namespace it watches. */}}
{{- define "codemode.rbac.namespacedRules" -}}
- apiGroups: ["codemode.dev"]
  resources: ["workspaces", "codesessions", "workflowlibraries"]
  verbs: ["get", "list", "watch", "patch", "update", "delete"]
- apiGroups: ["codemode.dev"]
  resources: ["workspaces/status", "codesessions/status", "workflowlibraries/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["pods", "services", "secrets"]
  verbs: ["create", "get", "list", "watch", "delete", "update", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete", "update", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "get", "list", "watch", "delete", "update", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
