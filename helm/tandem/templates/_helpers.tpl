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
left out (it must be empty: TANDEM_HOST is the node's name), rsh set for the mounted ssh
files, docker_host and lxd_socket, when empty, set to the sockets the chart mounts.
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
{{- /* The Docker socket is mounted at its host path, LXD's directory at lxd_dir. */ -}}
{{- if and .Values.settings.docker (not .Values.settings.docker_host) -}}
{{- $_ := set $settings "docker_host" (printf "unix://%s" .Values.hostPaths.dockerSocket) -}}
{{- end -}}
{{- if and .Values.settings.lxd (not .Values.settings.lxd_socket) -}}
{{- $_ := set $settings "lxd_socket" (printf "%s/unix.socket" (trimSuffix "/" .Values.settings.lxd_dir)) -}}
{{- end -}}
# tandem's settings, rendered by the tandem chart from .Values.settings.
# The API token is in the Secret (env TANDEM_API_TOKEN); host is the node's name
# (env TANDEM_HOST).
{{ toToml $settings }}
{{- end -}}

{{/* The checks no schema can make: fail with a message naming the values to change. */}}
{{- define "tandem.validate" -}}
{{- $s := .Values.settings -}}
{{- /* The supervisor waits stop_timeout for the workers' flush, then its kill grace
(orchestrator/lifecycle.py Timing.kill_grace, 5 s) before SIGKILL; plus a 5 s margin. */ -}}
{{- $needed := addf $s.stop_timeout 5 5 -}}
{{- if lt (float64 .Values.terminationGracePeriodSeconds) $needed -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be at least settings.stop_timeout + 10 (%v): the supervisor waits stop_timeout (%v) for the workers' final flush and 5 s more before killing them, and Kubernetes must not kill the pod first" .Values.terminationGracePeriodSeconds $needed $s.stop_timeout) -}}
{{- end -}}
{{- if $s.host -}}
{{- fail (printf "settings.host %q is refused: every node of the DaemonSet would use it for {host} in destinations and overwrite the other nodes' copies; leave it empty (each node uses its node name)" (toString $s.host)) -}}
{{- end -}}
{{- /* Two of the model's cross-field rules (orchestrator.settings.Settings), cheap to check here. */ -}}
{{- if lt (float64 $s.heartbeat_timeout) (mulf $s.heartbeat 2) -}}
{{- fail (printf "settings.heartbeat_timeout (%v) must be at least twice settings.heartbeat (%v)" $s.heartbeat_timeout $s.heartbeat) -}}
{{- end -}}
{{- if lt (float64 $s.restart_delay_max) (float64 $s.restart_delay) -}}
{{- fail (printf "settings.restart_delay_max (%v) must not be below settings.restart_delay (%v)" $s.restart_delay_max $s.restart_delay) -}}
{{- end -}}
{{- $host := toString $s.api_host -}}
{{- if or (eq $host "localhost" "::1" "[::1]") (hasPrefix "127." $host) -}}
{{- fail (printf "settings.api_host %q is loopback: the Service and the kubelet's probes reach the pod IP (use 0.0.0.0 or ::)" $host) -}}
{{- end -}}
{{- if and .Values.ssh.privateKey (not .Values.ssh.knownHosts) (not $s.rsh) -}}
{{- fail "ssh.privateKey is set but ssh.knownHosts is not: give the peers' host keys (--set-file ssh.knownHosts=FILE, e.g. from ssh-keyscan PEER) or your own settings.rsh" -}}
{{- end -}}
{{- end -}}
