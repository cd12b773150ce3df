{{/*
Names. Kubernetes names are limited to 63 characters (DNS labels), and the Service name
is part of the certificate's DNS names, so every name derives from one fullname.
*/}}
{{- define "psi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "psi.fullname" -}}
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

{{- define "psi.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource, except app.kubernetes.io/component. */}}
{{- define "psi.baseLabels" -}}
helm.sh/chart: {{ include "psi.chart" . }}
app.kubernetes.io/name: {{ include "psi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pullsecret-injector
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of the webhook's own resources. */}}
{{- define "psi.labels" -}}
{{ include "psi.baseLabels" . }}
app.kubernetes.io/component: webhook
{{- end }}

{{/* Selector labels: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "psi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "psi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "psi.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "psi.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "psi.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The Secret holding tls.crt/tls.key the server mounts (and ca.crt in chart modes). */}}
{{- define "psi.tlsSecretName" -}}
{{- if eq .Values.certificates.mode "existingSecret" }}
{{- .Values.certificates.existingSecret.name }}
{{- else }}
{{- printf "%s-tls" (include "psi.fullname" .) }}
{{- end }}
{{- end }}

{{/* Every DNS name the API server may dial the Service by: the certificate's SANs. */}}
{{- define "psi.dnsNames" -}}
{{- $svc := include "psi.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/*
The caBundle in existingSecret mode, as PEM: accepts PEM text or its base64 encoding.
*/}}
{{- define "psi.existingCaPem" -}}
{{- $ca := .Values.certificates.existingSecret.caBundle | trim }}
{{- if hasPrefix "-----BEGIN" $ca }}
{{- $ca }}
{{- else }}
{{- b64dec $ca | trim }}
{{- end }}
{{- end }}

{{/*
Self-signed certificates, stable across upgrades.

`lookup` reads the CA and serving Secrets back from the cluster on install/upgrade; they
are reused while they are valid for the current DNS names and far enough from expiry.
Without cluster access (`helm template`, client-side --dry-run) lookup returns an empty
map, and a fresh pair is generated: rendering never fails, it just cannot be stable.
Returns JSON: caCert, caKey, cert, key (PEM), caNotAfter, notAfter (Unix seconds),
caBundle (PEM: the CA, plus the previous CA while a CA rotation is under way).
*/}}
{{- define "psi.selfSignedCerts" -}}
{{- $cfg := .Values.certificates.selfSigned }}
{{- $fullname := include "psi.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $dnsNames := include "psi.dnsNames" . | fromJsonArray }}
{{- $dnsKey := join "," $dnsNames }}
{{- $now := now | unixEpoch | int64 }}
{{- $renewBefore := mul $cfg.renewBeforeDays 86400 }}
{{- $annNotAfter := "pullsecret-injector.io/not-after" }}
{{- $annDns := "pullsecret-injector.io/dns-names" }}
{{- $out := dict }}
{{- $previousCa := "" }}

{{- /* The CA: reuse when present, complete and not within renewBeforeDays of its end. */}}
{{- $caSecret := lookup "v1" "Secret" $ns (printf "%s-ca" $fullname) | default dict }}
{{- $caData := $caSecret.data | default dict }}
{{- $caAnn := ($caSecret.metadata | default dict).annotations | default dict }}
{{- $caNotAfter := index $caAnn $annNotAfter | default "0" | int64 }}
{{- $ca := dict }}
{{- if and (index $caData "tls.crt") (index $caData "tls.key") (gt (sub $caNotAfter $renewBefore) $now) }}
{{- $ca = buildCustomCert (index $caData "tls.crt") (index $caData "tls.key") }}
{{- else }}
{{- if and (index $caData "tls.crt") (gt $caNotAfter $now) }}
{{- $previousCa = index $caData "tls.crt" | b64dec }}
{{- end }}
{{- $caKey := genPrivateKey $cfg.keyType }}
{{- $ca = genCAWithKey (printf "%s-ca" ($fullname | trunc 60 | trimSuffix "-")) (int $cfg.caValidityDays) $caKey }}
{{- $caNotAfter = add $now (mul $cfg.caValidityDays 86400) }}
{{- end }}

{{- /* The serving certificate: reuse when signed by this CA, for these names, not due. */}}
{{- $tlsSecret := lookup "v1" "Secret" $ns (printf "%s-tls" $fullname) | default dict }}
{{- $tlsData := $tlsSecret.data | default dict }}
{{- $tlsAnn := ($tlsSecret.metadata | default dict).annotations | default dict }}
{{- $notAfter := index $tlsAnn $annNotAfter | default "0" | int64 }}
{{- $sameCa := eq (index $tlsData "ca.crt" | default "") ($ca.Cert | b64enc) }}
{{- $sameNames := eq (index $tlsAnn $annDns | default "") $dnsKey }}
{{- if and $sameCa $sameNames (index $tlsData "tls.crt") (index $tlsData "tls.key") (gt (sub $notAfter $renewBefore) $now) }}
{{- $_ := set $out "cert" (index $tlsData "tls.crt" | b64dec) }}
{{- $_ := set $out "key" (index $tlsData "tls.key" | b64dec) }}
{{- else }}
{{- $days := min $cfg.validityDays $cfg.caValidityDays }}
{{- $key := genPrivateKey $cfg.keyType }}
{{- $cert := genSignedCertWithKey (first $dnsNames) nil $dnsNames (int $days) $ca $key }}
{{- $_ := set $out "cert" $cert.Cert }}
{{- $_ := set $out "key" $cert.Key }}
{{- $notAfter = add $now (mul $days 86400) }}
{{- end }}

{{- $bundle := $ca.Cert | trim }}
{{- if and $previousCa (ne ($previousCa | trim) $bundle) }}
{{- $bundle = printf "%s\n%s" $bundle ($previousCa | trim) }}
{{- end }}
{{- $_ := set $out "caCert" $ca.Cert }}
{{- $_ := set $out "caKey" $ca.Key }}
{{- $_ := set $out "caNotAfter" (toString $caNotAfter) }}
{{- $_ := set $out "notAfter" (toString $notAfter) }}
{{- $_ := set $out "dnsNames" $dnsKey }}
{{- $_ := set $out "caBundle" (printf "%s\n" $bundle) }}
{{- toJson $out }}
{{- end }}

{{/* The `helm test` pod as a NetworkPolicy peer: it calls /mutate and /readyz. */}}
{{- define "psi.testPodPeer" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ include "psi.name" . }}
      app.kubernetes.io/instance: {{ .Release.Name }}
      app.kubernetes.io/component: test
{{- end }}
