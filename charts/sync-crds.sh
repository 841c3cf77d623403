#!/usr/bin/env sh
# Copy the generated CRD (crds/, the single source, from `chiron-crd`) into the Helm chart, and
# re-render the plain manifests in deploy/kustomize that embed it.
#
#   charts/sync-crds.sh          # copy, then re-render deploy/kustomize
#   charts/sync-crds.sh --check  # exit 1 if the chart's copy differs from crds/
#
# The Helm chart must ship the CRD as a file in its crds/ directory (Helm installs those before
# the templates and never templates them), so it is a copy, checked byte for byte by tests/chart.
set -eu
root=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
src="$root/crds/chiron.io_llmservingpools.yaml"
dst="$root/charts/chiron-operator/crds/chiron.io_llmservingpools.yaml"
python="${PYTHON:-$root/.venv/bin/python}"

if [ "${1:-}" = "--check" ]; then
    if cmp -s "$src" "$dst"; then
        exit 0
    fi
    echo "stale: $dst differs from $src; run charts/sync-crds.sh" >&2
    exit 1
fi

cp "$src" "$dst"
"$python" "$root/deploy/kustomize/render.py"
