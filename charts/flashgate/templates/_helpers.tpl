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

{{/* A ServiceAccount token for one container (the pod mounts none): a projected volume with the
files the Kubernetes client's in-cluster loader reads (token, ca.crt, namespace); mount it at
/var/run/secrets/kubernetes.io/serviceaccount. */}}
{{- define "flashgate.kubeAPIAccessVolume" -}}
- name: kube-api-access
  projected:
    defaultMode: 0440
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                apiVersion: v1
                fieldPath: metadata.namespace
{{- end -}}

{{/* Read-only object-storage credentials from a Secret (an s3Credentials value), as the files
access-key-id, secret-access-key and session-token of volume `s3-credentials`. */}}
{{- define "flashgate.s3CredentialsVolume" -}}
- name: s3-credentials
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
      - {key: {{ .accessKeyIdKey }}, path: access-key-id}
      - {key: {{ .secretAccessKeyKey }}, path: secret-access-key}
      {{- if .sessionTokenKey }}
      - {key: {{ .sessionTokenKey }}, path: session-token}
      {{- end }}
{{- end -}}

{{/* Point the s3 section of a configuration (dict "config" C "credentials" an s3Credentials
value "dir" mount path) at the credential files of that volume, when both are set. */}}
{{- define "flashgate.s3CredentialFiles" -}}
{{- if and .config.s3 .credentials.secretName -}}
{{- $s3 := .config.s3 -}}
{{- $_ := set $s3 "accessKeyIdFile" (printf "%s/access-key-id" .dir) -}}
{{- $_ := set $s3 "secretAccessKeyFile" (printf "%s/secret-access-key" .dir) -}}
{{- if .credentials.sessionTokenKey -}}
{{- $_ := set $s3 "sessionTokenFile" (printf "%s/session-token" .dir) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* ---- the delivery service (delivery.enabled) ---- */}}

{{/* <fullname>-delivery, short enough for every suffix the delivery objects add. */}}
{{- define "flashgate.delivery.fullname" -}}
{{- printf "%s-delivery" (include "flashgate.fullname" . | trunc 43 | trimSuffix "-") -}}
{{- end -}}

{{/* Its own application name, so that no selector of the operator's pod matches its pods. */}}
{{- define "flashgate.delivery.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-delivery" (include "flashgate.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Its objects' labels (each adds app.kubernetes.io/component). */}}
{{- define "flashgate.delivery.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "flashgate.delivery.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flashgate
{{- end -}}

{{- define "flashgate.delivery.serviceAccountName" -}}
{{- default (include "flashgate.delivery.fullname" .) .Values.delivery.serviceAccount.name -}}
{{- end -}}

{{/* The Secret with its TLS serving certificate (tls.crt, tls.key): cert-manager's or yours. */}}
{{- define "flashgate.delivery.tlsSecret" -}}
{{- default (printf "%s-tls" (include "flashgate.delivery.fullname" .)) .Values.delivery.tls.secretName -}}
{{- end -}}

{{/* What a values file can get wrong about the delivery service that the schema cannot see. */}}
{{- define "flashgate.delivery.check" -}}
{{- $d := .Values.delivery -}}
{{- if not $d.fleets -}}
{{- fail "delivery.enabled: list the fleets it serves in delivery.fleets, each with its device CA: {<namespace>: {deviceCA: <PEM>}}" -}}
{{- end -}}
{{- if not (include "flashgate.allNamespaces" .) -}}
{{- range $fleet, $_ := $d.fleets -}}
{{- if not (has $fleet $.Values.fleets) -}}
{{- fail (printf "delivery.fleets.%s: not one of the fleets the chart serves (fleets: %s); the operator publishes nothing there" $fleet (join ", " $.Values.fleets)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $d.tls.certManager.enabled -}}
{{- if not $d.tls.certManager.issuerRef -}}
{{- fail "delivery.tls.certManager.issuerRef: name the issuer whose CA your devices trust (a self-signed issuer's CA would change with the chart's installs)" -}}
{{- end -}}
{{- if not $d.tls.certManager.dnsNames -}}
{{- fail "delivery.tls.certManager.dnsNames: the names devices reach the service by" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A pod's affinity (dict "affinity" the value "replicas" its replicas "selectorLabels" its
selector labels): the value when set, else with more than one replica a preference for
different nodes. */}}
{{- define "flashgate.affinity" -}}
{{- if .affinity }}
affinity:
  {{- toYaml .affinity | nindent 2 }}
{{- else if gt (int .replicas) 1 }}
affinity:
  # Replicas on different nodes when the scheduler can.
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- .selectorLabels | nindent 14 }}
{{- end }}
{{- end -}}
