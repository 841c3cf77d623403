#!/usr/bin/env bash
# Try Chiron on a laptop with Docker and no GPU: a kind cluster, a plain Prometheus and Grafana,
# the operator from this checkout (Helm chart, locally built image), and a pool of emulated vLLM
# instances. Run from anywhere; see deploy/kind/README.md.
#
#   deploy/kind/install.sh            # create or reuse the cluster, build, install everything
#   deploy/kind/install.sh --load     # also start the load generator
#
# Environment: CLUSTER (kind cluster name, default chiron), IMAGE (default
# ghcr.io/chiron-operator/chiron-operator:dev).
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/../.." && pwd)
cluster=${CLUSTER:-chiron}
image=${IMAGE:-ghcr.io/chiron-operator/chiron-operator:dev}
repository=${image%:*}
tag=${image##*:}
start_load=false
case "${1:-}" in
    --load) start_load=true ;;
    "") ;;
    *) echo "usage: $0 [--load]" >&2; exit 2 ;;
esac

for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "$tool is required (see deploy/kind/README.md)" >&2; exit 1; }
done

step() { printf '\n==> %s\n' "$*"; }

step "kind cluster '$cluster'"
if kind get clusters | grep -qx "$cluster"; then
    echo "reusing the existing cluster"
else
    kind create cluster --name "$cluster" --config "$here/kind-config.yaml"
fi
kubectl config use-context "kind-$cluster" >/dev/null

step "image $image (operator and vLLM emulator)"
docker build -t "$image" "$root"
kind load docker-image "$image" --name "$cluster"

step "Prometheus and Grafana (namespace chiron-monitoring)"
kubectl apply -f "$here/monitoring.yaml"
config=$(mktemp)
trap 'rm -f "$config"' EXIT
{
    printf 'global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\n'
    printf 'rule_files:\n  - /etc/prometheus/chiron.rules.yaml\n'
    cat "$root/deploy/kustomize/plain-prometheus/scrape-configs.yaml"
} > "$config"
kubectl -n chiron-monitoring create configmap prometheus-config \
    --from-file=prometheus.yml="$config" \
    --from-file=chiron.rules.yaml="$root/deploy/kustomize/plain-prometheus/chiron.rules.yaml" \
    --dry-run=client -o yaml | kubectl apply -f -
kubectl -n chiron-monitoring create configmap grafana-dashboards \
    --from-file="$root/charts/chiron-operator/dashboards/" \
    --dry-run=client -o yaml | kubectl apply -f -
# Pick up configuration changes when the script runs again.
kubectl -n chiron-monitoring rollout restart deployment/prometheus deployment/grafana
kubectl -n chiron-monitoring rollout status deployment/prometheus --timeout=180s
kubectl -n chiron-monitoring rollout status deployment/grafana --timeout=180s

step "Chiron operator (Helm release chiron-operator, namespace chiron-system)"
kubectl create namespace llm-demo --dry-run=client -o yaml | kubectl apply -f -
# Helm installs CRDs only on the first install: apply them so a re-run upgrades them too.
kubectl apply --server-side -f "$root/charts/chiron-operator/crds/"
helm upgrade --install chiron-operator "$root/charts/chiron-operator" \
    --namespace chiron-system --create-namespace \
    --values "$here/values-kind.yaml" \
    --set image.repository="$repository" --set image.tag="$tag" \
    --wait --timeout 5m

step "emulated pool llm-demo/demo"
sed "s|ghcr.io/chiron-operator/chiron-operator:dev|$image|" "$here/pool.yaml" | kubectl apply -f -

if [ "$start_load" = true ]; then
    step "load generator (Job llm-demo/loadgen)"
    kubectl -n llm-demo delete job loadgen --ignore-not-found
    sed "s|ghcr.io/chiron-operator/chiron-operator:dev|$image|" "$here/loadgen.yaml" | kubectl apply -f -
fi

cat <<MSG

Done. Watch the pool:
  kubectl -n llm-demo get llmservingpools -w
  kubectl -n llm-demo get deployments,pods -l chiron.io/pool=demo
Operator logs:
  kubectl -n chiron-system logs deploy/chiron-operator -f
Grafana (dashboards "Chiron / Pool" and "Chiron / Operator"):
  kubectl -n chiron-monitoring port-forward svc/grafana 3000   # http://127.0.0.1:3000
Prometheus (alerts at /alerts):
  kubectl -n chiron-monitoring port-forward svc/prometheus 9090
Load: deploy/kind/install.sh --load, or kubectl apply -f deploy/kind/loadgen.yaml
Remove everything: kind delete cluster --name $cluster
MSG
