{{/*
Names and labels of every object the chart makes, in one place.
*/}}

{{/* The chart's name, cut to the 63 characters a label value allows. */}}
{{- define "mlserve-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name for objects: the release name alone when it already contains
the chart's name, else "<release>-<chart>"; cut to 63 characters.
*/}}
{{- define "mlserve-operator.fullname" -}}
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

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "mlserve-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the operator's pods; never change them in an upgrade. */}}
{{- define "mlserve-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlserve-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The labels on every object of the release. */}}
{{- define "mlserve-operator.labels" -}}
helm.sh/chart: {{ include "mlserve-operator.chart" . }}
{{ include "mlserve-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: mlserve
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "mlserve-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlserve-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ConfigMap with the operator's non-secret settings. */}}
{{- define "mlserve-operator.configMapName" -}}
{{- include "mlserve-operator.fullname" . }}
{{- end }}

{{/* The Secret with the database credentials: the user's own, or the one the chart makes. */}}
{{- define "mlserve-operator.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- printf "%s-database" (include "mlserve-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Whether the chart makes the database Secret: no existing one named, and something to put in it. */}}
{{- define "mlserve-operator.createDatabaseSecret" -}}
{{- if and (not .Values.database.existingSecret) (or .Values.database.url .Values.database.username .Values.database.password) }}true{{- end }}
{{- end }}

{{/* The name of the kopf peering object the operator pods share. */}}
{{- define "mlserve-operator.peeringName" -}}
{{- default (include "mlserve-operator.fullname" .) .Values.peering.name }}
{{- end }}

{{/* The image reference: repository and tag (the chart's appVersion unless set), or a digest. */}}
{{- define "mlserve-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when watchNamespaces holds a kopf pattern (glob or exclusion) rather than names only. */}}
{{- define "mlserve-operator.watchPatterns" -}}
{{- range .Values.watchNamespaces }}{{ if or (hasPrefix "!" .) (contains "*" .) (contains "?" .) }}true{{ end }}{{ end }}
{{- end }}

{{/* "true" when the operator's rights come from a ClusterRole: whole cluster, or patterns. */}}
{{- define "mlserve-operator.clusterRole" -}}
{{- if or (not .Values.watchNamespaces) (include "mlserve-operator.watchPatterns" .) }}true{{ end }}
{{- end }}

{{/*
The database's non-secret settings (MYSQL_*), as a YAML map: the ConfigMap's, and the
migration Job's (which runs before the ConfigMap exists).
*/}}
{{- define "mlserve-operator.databaseSettings" -}}
{{- with .Values.database }}
{{- if .host }}
MYSQL_HOST: {{ .host | quote }}
MYSQL_PORT: {{ .port | quote }}
{{- end }}
{{- if .name }}
MYSQL_DATABASE: {{ .name | quote }}
{{- end }}
{{- if .slaveHost }}
MYSQL_SLAVE_HOST: {{ .slaveHost | quote }}
{{- end }}
{{- end }}
{{- end }}
