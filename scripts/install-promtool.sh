#!/usr/bin/env bash
# Install promtool (the Prometheus rule linter and rule-test runner) for tests/chart/.
# Debian's `prometheus` package ships it as /usr/bin/promtool; no other source is needed.
#
# Idempotent: does nothing when promtool is already on PATH. Needs root and apt (a fresh
# Debian 12 machine, as CI's is). The package also carries the Prometheus server and its
# service; it must not start here (CI and developers only need the binary), so while apt
# runs a policy-rc.d that refuses every service start is put in place, unless the machine
# already has one (container images usually do), and removed afterwards.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    echo "install-promtool: $(promtool --version 2>&1 | head -n1) already at $(command -v promtool)"
    exit 0
fi

[[ "$(id -u)" -eq 0 ]] || { echo "install-promtool: run as root (apt-get install prometheus)" >&2; exit 1; }
command -v apt-get >/dev/null || { echo "install-promtool: needs apt-get (Debian's prometheus package)" >&2; exit 1; }

POLICY=/usr/sbin/policy-rc.d
if [[ ! -e "${POLICY}" ]]; then
    printf '#!/bin/sh\n# install-promtool: no service starts during the install\nexit 101\n' >"${POLICY}"
    chmod 0755 "${POLICY}"
    trap 'rm -f "${POLICY}"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null

command -v promtool >/dev/null || { echo "install-promtool: prometheus installed but no promtool on PATH" >&2; exit 1; }
echo "install-promtool: installed $(promtool --version 2>&1 | head -n1) at $(command -v promtool)"
