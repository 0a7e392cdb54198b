{{/* Names and labels of kfn's own objects. Cluster-scoped objects carry the
release name, so two releases (or a `kfn install`) never fight over one. */}}
{{- define "kfn.fullname" -}}
{{- if hasPrefix "kfn" .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "kfn-%s" .Release.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "kfn.operatorName" -}}{{ include "kfn.fullname" . }}-operator{{- end -}}
{{- define "kfn.gatewayName" -}}{{ include "kfn.fullname" . }}-gateway{{- end -}}

{{/* In-cluster URLs of this release's gateway Service (the Lambda API) and scaler Service (demand pushes). */}}
{{- define "kfn.gatewayUrl" -}}
http://{{ include "kfn.gatewayName" . }}.{{ .Release.Namespace }}.svc{{ if ne (int .Values.gateway.service.port) 80 }}:{{ .Values.gateway.service.port }}{{ end }}
{{- end -}}
{{- define "kfn.scalerUrl" -}}http://{{ include "kfn.fullname" . }}-scaler.{{ .Release.Namespace }}.svc:8081{{- end -}}

{{/* the labels `kfn install` puts on the operator (kfn/names.py), plus Helm's */}}
{{- define "kfn.operatorSelector" -}}
app.kubernetes.io/managed-by: kfn
kfn.dev/component: operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* the labels `kfn install` puts on the gateway: kfn.dev/component: gateway is
also what every function's ingress NetworkPolicy admits */}}
{{- define "kfn.gatewaySelector" -}}
app.kubernetes.io/managed-by: kfn
kfn.dev/component: gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* chart labels plus a component's selector labels; dict root, component */}}
{{- define "kfn.componentLabels" -}}
{{ include "kfn.labels" .root }}
{{ if eq .component "gateway" }}{{ include "kfn.gatewaySelector" .root }}{{ else }}{{ include "kfn.operatorSelector" .root }}{{ end }}
{{- end -}}

{{- define "kfn.labels" -}}
app.kubernetes.io/name: kfn
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* argocd.argoproj.io/sync-wave annotation: CRDs -10, kfn's components 0 */}}
{{- define "kfn.wave" -}}
{{- if .root.Values.argocd.syncWaves }}
argocd.argoproj.io/sync-wave: {{ .wave | quote }}
{{- end }}
{{- end -}}

{{- define "kfn.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag }}{{- end -}}

{{/* The operator's image flags, as kfn.install.image_flags builds them:
agents from the operator's image, managed runtimes from <prefix>/<runtime>:<tag>. */}}
{{- define "kfn.imageFlags" -}}
{{- $repo := .Values.image.repository -}}
- --agent-image
- {{ include "kfn.image" . }}
{{- if hasSuffix "/kfn" $repo }}
{{- $prefix := trimSuffix "kfn" $repo }}
- --runtime-image-template
- {{ printf "%s{runtime}:%s" $prefix .Values.image.tag }}
- --provided-image
- {{ printf "%spython3.11:%s" $prefix .Values.image.tag }}
{{- end }}
{{- end -}}

{{/* Pod Security "restricted" for every container kfn's chart runs. */}}
{{- define "kfn.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
