{{/* Names and labels. */}}
{{- define "tandem.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tandem.fullname" -}}
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

{{- define "tandem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tandem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tandem.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tandem.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "tandem.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Where the chart puts tandem's files inside the pod. */}}
{{- define "tandem.configDir" -}}/etc/tandem{{- end -}}
{{- define "tandem.sshDir" -}}/etc/tandem/ssh{{- end -}}

{{/*
The remote shell the chart sets when settings.rsh is empty and an ssh key or known_hosts
is given: the mounted files, host keys checked, never a password prompt.
*/}}
{{- define "tandem.rsh" -}}
{{- $ssh := include "tandem.sshDir" . -}}
{{- $parts := list "ssh" -}}
{{- if .Values.ssh.privateKey -}}
{{- $parts = append $parts (printf "-i %s/id" $ssh) -}}
{{- end -}}
{{- if .Values.ssh.knownHosts -}}
{{- $parts = append $parts (printf "-o UserKnownHostsFile=%s/known_hosts -o StrictHostKeyChecking=yes" $ssh) -}}
{{- end -}}
{{- $parts = append $parts "-o BatchMode=yes" -}}
{{- join " " $parts -}}
{{- end -}}

{{/*
tandem.toml from .Values.settings: null and empty values ("", [], {}) left out (TOML has
no null; the program's default applies), api_token left out (it is in the Secret), host
left out when empty (TANDEM_HOST is the node's name), rsh set for the mounted ssh files.
false and 0 are kept.
*/}}
{{- define "tandem.toml" -}}
{{- $settings := dict -}}
{{- range $key, $value := .Values.settings -}}
{{- if or (eq $key "api_token") (kindIs "invalid" $value) -}}
{{- else if and (kindIs "string" $value) (eq $value "") -}}
{{- else if and (or (kindIs "slice" $value) (kindIs "map" $value)) (eq (len $value) 0) -}}
{{- else if eq $key "api_port" -}}
{{- $_ := set $settings $key (int $value) -}}
{{- else -}}
{{- $_ := set $settings $key $value -}}
{{- end -}}
{{- end -}}
{{- if and (not .Values.settings.rsh) (or .Values.ssh.privateKey .Values.ssh.knownHosts) -}}
{{- $_ := set $settings "rsh" (include "tandem.rsh" .) -}}
{{- end -}}
# tandem's settings, rendered by the tandem chart from .Values.settings.
# The API token is in the Secret (env TANDEM_API_TOKEN).
{{- if not .Values.settings.host }}
# host is the node's name (env TANDEM_HOST).
{{- end }}
{{ toToml $settings }}
{{- end -}}

{{/* The checks no schema can make: fail with a message naming the values to change. */}}
{{- define "tandem.validate" -}}
{{- $s := .Values.settings -}}
{{- if le (float64 .Values.terminationGracePeriodSeconds) (float64 $s.stop_timeout) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be greater than settings.stop_timeout (%v): Kubernetes kills the pod before the workers' final flush" .Values.terminationGracePeriodSeconds $s.stop_timeout) -}}
{{- end -}}
{{- $host := toString $s.api_host -}}
{{- if or (eq $host "localhost" "::1" "[::1]") (hasPrefix "127." $host) -}}
{{- fail (printf "settings.api_host %q is loopback: the Service and the kubelet's probes reach the pod IP (use 0.0.0.0 or ::)" $host) -}}
{{- end -}}
{{- if and .Values.ssh.privateKey (not .Values.ssh.knownHosts) (not $s.rsh) -}}
{{- fail "ssh.privateKey is set but ssh.knownHosts is not: give the peers' host keys (--set-file ssh.knownHosts=FILE, e.g. from ssh-keyscan PEER) or your own settings.rsh" -}}
{{- end -}}
{{- end -}}
