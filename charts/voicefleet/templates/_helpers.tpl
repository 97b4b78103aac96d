{{/*
Names, labels and small computed values, in one place. Every name is cut to 63 characters
(the DNS label limit) without a trailing dash.
*/}}

{{/* Chart name, or nameOverride. */}}
{{- define "voicefleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name used as the prefix of every object: fullnameOverride, else "<release>-<name>", else
the release name alone when it already contains the name.
*/}}
{{- define "voicefleet.fullname" -}}
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

{{/* Name of the operator's objects (Deployment, pod prefix). */}}
{{- define "voicefleet.operator.fullname" -}}
{{- printf "%s-operator" (include "voicefleet.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{/* "chart-version" for the helm.sh/chart label. */}}
{{- define "voicefleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "voicefleet.labels" -}}
helm.sh/chart: {{ include "voicefleet.chart" . }}
{{ include "voicefleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: voicefleet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels: stable across upgrades (never add the version here). */}}
{{- define "voicefleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "voicefleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Operator labels and selector labels. */}}
{{- define "voicefleet.operator.labels" -}}
{{ include "voicefleet.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "voicefleet.operator.selectorLabels" -}}
{{ include "voicefleet.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* ServiceAccount the operator runs as. */}}
{{- define "voicefleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "voicefleet.fullname" .) .Values.serviceAccount.name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* True (non-empty) when the operator watches a single namespace. */}}
{{- define "voicefleet.namespaced" -}}
{{- if eq .Values.operator.watch.scope "namespace" }}true{{ end }}
{{- end }}

{{/* The namespace watched in namespace scope. */}}
{{- define "voicefleet.watchNamespace" -}}
{{- default .Release.Namespace .Values.operator.watch.namespace }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: the digest wins, then the tag, then the
chart's appVersion. Call with (dict "image" .Values.x.image "root" $).
*/}}
{{- define "voicefleet.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* Name of the prometheus-adapter rules ConfigMap. */}}
{{- define "voicefleet.adapterConfigMapName" -}}
{{- default (printf "%s-adapter-rules" (include "voicefleet.fullname" . | trunc 49 | trimSuffix "-")) .Values.autoscaling.prometheusAdapter.configMapName }}
{{- end }}

{{/*
Cluster-scoped resources among the operator's RBAC rules. A namespace-scoped install puts the
rules into a Role, where these would mean nothing; kopf then skips its cluster-wide scanning
(it logs that it has no permission and goes on with what it found at start-up).
*/}}
{{- define "voicefleet.clusterScopedResources" -}}
customresourcedefinitions
namespaces
clusterkopfpeerings
nodes
persistentvolumes
{{- end }}
