#!/usr/bin/env bash
# `make run` and `make stop`: kfn on the test bed through its Helm chart, as a
# user installs it anywhere else (README's kind quickstart is the same steps).
#
#   kfn-run.sh run    helm upgrade --install kfn charts/kfn into kfn-system (a
#                     second run upgrades in place), deploy examples/hello-world.yaml,
#                     invoke it through the gateway, print how to invoke it from here
#   kfn-run.sh stop   remove the example and the release (helm uninstall); the CRDs,
#                     any Functions of yours and the test bed itself stay
#
# Expects the test bed up and kfn's images loaded (`make run` does both first)
# and the venv (kfn, boto3, aws) in $VENV. Images: docker.io/kfn/*:$KFN_IMAGE_TAG.
# KFN_RUN_NAMESPACE (default kfn-system) is where kfn goes; KFN_RUN_WATCH, if set, is
# the one namespace kfn then serves and the example goes to (default: kfn serves every
# namespace, the example goes to `default`). Tests use both, so a run of theirs never
# meets another kfn on a shared cluster. KFN_RUN_SET: more chart values, KEY=VALUE
# separated by spaces (helm --set).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$(cd "${VENV:-.venv}" && pwd)"
TAG="${KFN_IMAGE_TAG:-dev}"
RELEASE=kfn
NS="${KFN_RUN_NAMESPACE:-kfn-system}"
WATCH="${KFN_RUN_WATCH:-}"
FN_NS="${WATCH:-default}"
EXAMPLE=examples/hello-world.yaml
eval "$(bash testbed/env.sh print | grep -E '^(KUBECTL|KUBECONFIG_PATH|RUN_DIR)=')"
export KUBECONFIG="$KUBECONFIG_PATH"
kubectl() { "$KUBECTL" "$@"; }
START="${KFN_RUN_START:-$(date +%s)}"  # `make run` sets it before the test bed and images
say() { echo "==> [$(( $(date +%s) - START )) s] $*"; }

helm_bin() {
  say "helm (built from the Go module proxy into the test-bed cache once; minutes the first time)"
  HELM="$(bash testbed/build-tools.sh helm)"
}

run() {
  helm_bin
  # The CRDs go with the release, unless they are already in the cluster from something
  # else (kubectl apply -f crds/, kfn install): Helm would refuse to take them over, and
  # replacing them under their owner is not make run's business (docs/install.md).
  local crds=true owner
  owner="$(kubectl get crd functions.kfn.dev --ignore-not-found \
    -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}/{.metadata.annotations.meta\.helm\.sh/release-namespace}')"
  if [ -n "$owner" ] && [ "$owner" != "$RELEASE/$NS" ]; then
    crds=false
    say "kfn's CRDs are already in the cluster and not this release's: leaving them as they are (crds.install=false)"
  fi
  # A namespace this creates enforces Pod Security "restricted" (every pod of kfn's is admitted
  # by it), and `make stop` deletes it; one that was there already is left as it is.
  if ! kubectl get namespace "$NS" >/dev/null 2>&1; then
    kubectl create namespace "$NS" >/dev/null
    kubectl label namespace "$NS" app.kubernetes.io/created-by=kfn-make-run \
      pod-security.kubernetes.io/enforce=restricted >/dev/null
  fi
  local scope=() kv
  [ -z "$WATCH" ] || scope=(--set "operator.watchNamespaces={$WATCH}")
  # The async queue's NATS keeps its events on a PersistentVolumeClaim. The test bed has no StorageClass (no
  # provisioner): give the claim a hostPath PersistentVolume of its own, kept across runs (Retain).
  if ! kubectl get storageclass -o name 2>/dev/null | grep -q .; then
    say "no StorageClass here: a hostPath PersistentVolume for NATS ($RUN_DIR/pv/kfn-run-nats)"
    mkdir -p "$RUN_DIR/pv/kfn-run-nats" && chown 65532:65532 "$RUN_DIR/pv/kfn-run-nats"
    # released by an earlier run's claim (make stop removed the namespace): free it for the new claim
    if [ "$(kubectl get pv kfn-run-nats -o jsonpath='{.status.phase}' 2>/dev/null)" = Released ]; then
      kubectl patch pv kfn-run-nats --type=json -p '[{"op": "remove", "path": "/spec/claimRef/uid"}]' >/dev/null
    fi
    echo '{"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "kfn-run-nats"},
      "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
               "persistentVolumeReclaimPolicy": "Retain",
               "hostPath": {"path": "'"$RUN_DIR/pv/kfn-run-nats"'", "type": "Directory"},
               "claimRef": {"namespace": "'"$NS"'", "name": "data-'"$RELEASE"'-nats-0"}}}' | kubectl apply -f - >/dev/null
    scope+=(--set-string "nats.storage.storageClassName=")
  fi
  for kv in ${KFN_RUN_SET:-}; do scope+=(--set "$kv"); done
  say "helm upgrade --install $RELEASE charts/kfn --namespace $NS (operator, gateway, CRDs, RBAC; images kfn/*:$TAG; serving ${WATCH:-every namespace})"
  local out
  if ! out="$("$HELM" upgrade --install "$RELEASE" charts/kfn --namespace "$NS" "${scope[@]}" \
      --set image.repository=docker.io/kfn/kfn --set-string image.tag="$TAG" --set crds.install="$crds" 2>&1)"; then
    echo "$out" >&2
    case "$out" in *"invalid ownership metadata"*)
      echo "make run: kfn's objects were put there by something else than this release (kfn install?):" \
           "delete that install's operator and gateway (Deployments, Services, ServiceAccounts in $NS;" \
           "ClusterRoles and ClusterRoleBindings kfn-operator, kfn-gateway) and run make run again." \
           "Keep the CRDs: deleting them deletes every Function." >&2 ;;
    esac
    exit 1
  fi
  echo "$out" | sed -n '1,/^NOTES:/p' | grep -v '^NOTES:'
  # rollout status rather than helm's silent --wait: it prints each step
  kubectl wait --for=condition=Established --timeout=60s crd/functions.kfn.dev
  kubectl -n "$NS" rollout status "deployment/$RELEASE-operator" --timeout=300s
  kubectl -n "$NS" rollout status "deployment/$RELEASE-gateway" --timeout=300s
  kubectl -n "$NS" rollout status "deployment/$RELEASE-scaler" --timeout=300s
  kubectl -n "$NS" rollout status "statefulset/$RELEASE-nats" --timeout=300s
  kubectl -n "$NS" rollout status "deployment/$RELEASE-async-worker" --timeout=300s
  say "deploying $EXAMPLE into namespace $FN_NS"
  kubectl -n "$FN_NS" apply -f "$EXAMPLE"
  say "waiting for hello's first execution environment (images are local: nothing to pull)"
  kubectl -n "$FN_NS" wait --for=condition=Ready function/hello --timeout=300s
  kubectl -n "$FN_NS" wait --for=condition=Available function/hello --timeout=300s
  kubectl -n "$FN_NS" get kfn
  say "kfn invoke hello --payload '{\"name\": \"kfn\"}' --log-type Tail   (through the gateway)"
  "$VENV/bin/kfn" invoke hello -n "$FN_NS" --gateway-namespace "$NS" --payload '{"name": "kfn"}' --log-type Tail
  local gw endpoint boto3_line aws_line
  gw="$(kubectl -n "$NS" get service "$RELEASE-gateway" -o jsonpath='{.spec.clusterIP}')"
  endpoint="http://$gw"
  export KFN_ENDPOINT="$endpoint"
  boto3_line="$VENV/bin/python -c \"import os, boto3; c = boto3.client('lambda', endpoint_url=os.environ['KFN_ENDPOINT'], region_name='us-east-1', aws_access_key_id='any', aws_secret_access_key='any'); print(c.invoke(FunctionName='hello', Payload=b'{\\\"name\\\": \\\"boto3\\\"}')['Payload'].read().decode())\""
  aws_line="AWS_ACCESS_KEY_ID=any AWS_SECRET_ACCESS_KEY=any $VENV/bin/aws lambda invoke --endpoint-url \$KFN_ENDPOINT --region us-east-1 --function-name hello --payload '{\"name\": \"aws\"}' /tmp/kfn-hello.json && cat /tmp/kfn-hello.json && echo"
  say "boto3 through the gateway's Service ($NS/$RELEASE-gateway, $endpoint)"
  eval "$boto3_line"
  say "aws lambda invoke through the gateway"
  eval "$aws_line"
  say "first invoke through the gateway answered $(( $(date +%s) - START )) s after make run started"
  cat <<EOF

kfn is running (helm release $RELEASE in $NS; \`make stop\` removes it). From this machine:

export KUBECONFIG=$KUBECONFIG
export KFN_ENDPOINT=$endpoint
$boto3_line
$aws_line
EOF
}

stop() {
  helm_bin
  # The example first, while the operator still runs to clean up after it.
  if kubectl get crd functions.kfn.dev >/dev/null 2>&1; then
    say "removing $EXAMPLE from namespace $FN_NS"
    # foreground: done only once its execution environments (children, garbage-collected) are gone too
    kubectl -n "$FN_NS" delete -f "$EXAMPLE" --ignore-not-found --cascade=foreground --wait --timeout=180s
  fi
  say "helm uninstall $RELEASE --namespace $NS"
  "$HELM" uninstall "$RELEASE" --namespace "$NS" --wait --ignore-not-found
  if [ "$(kubectl get namespace "$NS" --ignore-not-found -o jsonpath='{.metadata.labels.app\.kubernetes\.io/created-by}')" = kfn-make-run ]; then
    say "deleting namespace $NS (make run created it)"
    kubectl delete namespace "$NS" --wait --timeout=120s
  fi
  cat <<EOF
kfn is uninstalled. Left in place: kfn's CRDs and any Functions, versions and aliases of yours
(helm.sh/resource-policy: keep; \`kubectl delete crd functions.kfn.dev functionversions.kfn.dev
aliases.kfn.dev eventsourcemappings.kfn.dev securitygroups.kfn.dev\` deletes them all), and the test bed itself
(\`make cluster-down\` stops it; the build cache stays).
EOF
}

case "${1:-}" in
  run) run ;;
  stop) stop ;;
  *) echo "usage: $0 run|stop" >&2; exit 2 ;;
esac
