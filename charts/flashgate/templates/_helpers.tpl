{{/* Names, labels and identities shared by the templates. */}}

{{- define "flashgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release name alone when it already says flashgate ("flashgate" -> flashgate-operator). */}}
{{- define "flashgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "flashgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "flashgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flashgate
{{- end -}}

{{- define "flashgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flashgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "flashgate.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "flashgate.fullname" .)) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The operator's user name as the API server sees it (admission policies). */}}
{{- define "flashgate.operatorUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "flashgate.serviceAccountName" . }}
{{- end -}}

{{/* "true" when every namespace is served (fleets: "*"). */}}
{{- define "flashgate.allNamespaces" -}}
{{- if kindIs "string" .Values.fleets -}}true{{- end -}}
{{- end -}}

{{- define "flashgate.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "flashgate.webhookService" -}}
{{ include "flashgate.fullname" . }}-webhook
{{- end -}}

{{/* The Secret with the webhook's tls.crt, tls.key and ca.crt (cert-manager's or the hook's). */}}
{{- define "flashgate.webhookSecret" -}}
{{ include "flashgate.fullname" . }}-webhook-tls
{{- end -}}

{{/* The names the webhook's serving certificate is valid for. */}}
{{- define "flashgate.webhookDNSNames" -}}
{{- $svc := include "flashgate.webhookService" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson -}}
{{- end -}}

{{/* The hardening every container gets (restricted Pod Security). */}}
{{- define "flashgate.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "flashgate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}
