{{/* Names and labels shared by every object of the release. */}}
{{- define "crescent.fullname" -}}
{{- printf "%s-crescent" .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "crescent.labels" -}}
app.kubernetes.io/name: crescent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The selector labels of one role: call with (dict "root" $ "role" "decode"). */}}
{{- define "crescent.selector" -}}
app.kubernetes.io/name: crescent
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "crescent.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- define "crescent.kvMaster" -}}
{{ include "crescent.fullname" . }}-kv-master:{{ .Values.kvMaster.port }}
{{- end -}}

{{- define "crescent.conductorGrpc" -}}
{{ include "crescent.fullname" . }}-conductor:{{ .Values.conductor.grpcPort }}
{{- end -}}

{{/* The model volume, when one is configured (pod spec level). */}}
{{- define "crescent.modelVolume" -}}
{{- if .Values.model.hostPath }}
volumes:
  - name: model
    hostPath:
      path: {{ .Values.model.hostPath | quote }}
      type: Directory
{{- else if .Values.model.existingClaim }}
volumes:
  - name: model
    persistentVolumeClaim:
      claimName: {{ .Values.model.existingClaim | quote }}
      readOnly: true
{{- end }}
{{- end -}}

{{- define "crescent.modelMount" -}}
{{- if or .Values.model.hostPath .Values.model.existingClaim }}
volumeMounts:
  - name: model
    mountPath: {{ .Values.model.mountPath | quote }}
    readOnly: true
{{- end }}
{{- end -}}

{{/* requests = limits, so a node's threads get the CPUs it was sized for. */}}
{{- define "crescent.resources" -}}
resources:
  requests:
    cpu: {{ .cpu | quote }}
    memory: {{ .memory | quote }}
  limits:
    cpu: {{ .cpu | quote }}
    memory: {{ .memory | quote }}
{{- end -}}

{{/* POD_NAME and POD_IP from the downward API: a node's id and the address it advertises. */}}
{{- define "crescent.podEnv" -}}
env:
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  - name: POD_IP
    valueFrom:
      fieldRef:
        fieldPath: status.podIP
{{- end -}}
