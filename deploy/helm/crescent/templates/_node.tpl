{{/*
A prefill or decode node's Deployment: call with
(dict "root" $ "role" "prefill" "command" "prefill-node" "v" .Values.prefill "args" (list ...)).
Each pod is one node: its id is the pod name, it listens on all interfaces and advertises the
pod IP, so the conductor, the KV master and the other nodes reach it directly.
*/}}
{{- define "crescent.node" -}}
{{- $root := .root -}}
{{- $v := .v -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "crescent.fullname" $root }}-{{ .role }}
  labels:
    {{- include "crescent.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .role }}
spec:
  replicas: {{ $v.replicas }}
  selector:
    matchLabels:
      {{- include "crescent.selector" (dict "root" $root "role" .role) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "crescent.selector" (dict "root" $root "role" .role) | nindent 8 }}
    spec:
      # Long enough for the node's own drain (--drain-timeout-s) after SIGTERM.
      terminationGracePeriodSeconds: {{ add $v.drainTimeoutS 15 }}
      {{- include "crescent.modelVolume" $root | nindent 6 }}
      containers:
        - name: {{ .role }}
          image: {{ include "crescent.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          {{- include "crescent.podEnv" $root | nindent 10 }}
          args:
            - {{ .command }}
            - --model
            - {{ $root.Values.model.path | quote }}
            - --node-id
            - "$(POD_NAME)"
            - --conductor
            - {{ include "crescent.conductorGrpc" $root | quote }}
            - --kv-master
            - {{ include "crescent.kvMaster" $root | quote }}
            - --grpc-listen
            - "0.0.0.0:{{ $v.grpcPort }}"
            - --data-listen
            - "0.0.0.0:{{ $v.dataPort }}"
            - --metrics-host
            - "0.0.0.0"
            - --metrics-port
            - {{ $v.metricsPort | quote }}
            - --advertise-host
            - "$(POD_IP)"
            - --threads
            - {{ $v.threads | quote }}
            - --kv-cache-mb
            - {{ $v.kvCacheMb | quote }}
            - --block-tokens
            - {{ $root.Values.blockTokens | quote }}
            - --max-step-tokens
            - {{ $v.maxStepTokens | quote }}
            - --transport
            - {{ $root.Values.transport | quote }}
            - --drain-timeout-s
            - {{ $v.drainTimeoutS | quote }}
            {{- range .args }}
            - {{ . | quote }}
            {{- end }}
          ports:
            - name: grpc
              containerPort: {{ $v.grpcPort }}
            - name: data
              containerPort: {{ $v.dataPort }}
            - name: metrics
              containerPort: {{ $v.metricsPort }}
          readinessProbe:
            httpGet:
              path: /ready
              port: metrics
            periodSeconds: 5
          livenessProbe:
            httpGet:
              path: /health
              port: metrics
            initialDelaySeconds: 30
            periodSeconds: 10
          {{- include "crescent.modelMount" $root | nindent 10 }}
          {{- include "crescent.resources" $v.resources | nindent 10 }}
{{- end -}}
