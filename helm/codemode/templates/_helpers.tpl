{{/* Chart name, truncated to a DNS label. */}}
{{- define "codemode.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, plus the chart name unless it already contains it.
Dots (allowed in release names) become dashes: Service and StatefulSet names are DNS labels. */}}
{{- define "codemode.fullname" -}}
{{- $full := "" -}}
{{- if .Values.fullnameOverride -}}
{{- $full = .Values.fullnameOverride -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- $full = .Release.Name -}}
{{- else -}}
{{- $full = printf "%s-%s" .Release.Name $name -}}
{{- end -}}
{{- end -}}
{{- $full | replace "." "-" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name with a suffix, the full name shortened so the result fits `max`
characters and the suffix stays (names that differ only in their suffix stay distinct).
Call: include "codemode.suffixed" (list . "metrics" 63) */}}
{{- define "codemode.suffixed" -}}
{{- $ctx := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- $max := index . 2 -}}
{{- $base := include "codemode.fullname" $ctx | trunc (int (sub $max (add1 (len $suffix)))) | trimSuffix "-" -}}
{{- printf "%s-%s" $base $suffix -}}
{{- end -}}

{{/* Names of the chart's objects. A StatefulSet's name must leave room for the
controller-revision-hash label (name + "-" + 10 characters <= 63), hence 52. */}}
{{- define "codemode.operator.fullname" -}}
{{- include "codemode.suffixed" (list . "operator" 63) -}}
{{- end -}}

{{- define "codemode.metrics.fullname" -}}
{{- include "codemode.suffixed" (list . "metrics" 63) -}}
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

{{/* Without serviceAccount.create a name is required: binding the operator's rules to
the namespace's `default` ServiceAccount would hand them to every pod using it. */}}
{{- define "codemode.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "codemode.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: set the name of an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "codemode.redis.fullname" -}}
{{- include "codemode.suffixed" (list . "redis" 52) -}}
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

{{/* Rules the operator needs in every namespace it watches: exactly the calls of kopf
(list/watch of the kinds it handles, patches for finalizers, annotations and status,
core v1 Events) and of operator/codemode_operator/kube.py. Children carry ownerReferences
with blockOwnerDeletion, which needs `update` of the owner's finalizers where the
OwnerReferencesPermissionEnforcement admission plugin is on (e.g. OpenShift). */}}
{{- define "codemode.rbac.namespacedRules" -}}
- apiGroups: ["codemode.dev"]
  resources: ["workspaces", "codesessions", "workflowlibraries"]
  verbs: ["get", "list", "watch", "patch"]
# A Workspace deleted with deletionPolicy Cascade deletes its sessions and libraries.
- apiGroups: ["codemode.dev"]
  resources: ["codesessions", "workflowlibraries"]
  verbs: ["delete"]
- apiGroups: ["codemode.dev"]
  resources: ["workspaces/status", "codesessions/status", "workflowlibraries/status"]
  verbs: ["patch"]
- apiGroups: ["codemode.dev"]
  resources: ["workspaces/finalizers", "codesessions/finalizers", "workflowlibraries/finalizers"]
  verbs: ["update"]
# Session pods (watched for readiness; a warm pool pod is patched when a session takes
# it) and library sync Jobs' pods (read for results).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "delete"]
# A session Service's one endpoint, written by the operator (server-side apply).
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["create", "patch", "delete"]
# Session token Secrets, Workspace Redis credentials (replaced), the Redis Secrets users reference.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "get", "update", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "update"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{- define "codemode.gateway.fullname" -}}
{{- include "codemode.suffixed" (list . "gateway" 63) -}}
{{- end -}}

{{- define "codemode.gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codemode.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{/* What the gateway reads and does in each namespace it serves: a session (created on
first use, resumed when suspended), its token Secret and its pod's address. */}}
{{- define "codemode.rbac.gatewayRules" -}}
# list and watch: the gateway keeps the sessions it routes to from a watch.
- apiGroups: ["codemode.dev"]
  resources: ["codesessions"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["secrets", "pods"]
  verbs: ["get"]
{{- end -}}
