#!/usr/bin/env bash
# Build KEDA (the operator, cmd/operator, and the metrics API server,
# cmd/adapter; not the optional admission webhooks) from the Go module proxy at
# a pinned version into the test-bed cache, and its image docker.io/kfn/keda:<v>
# (FROM scratch: both binaries are static). A warm cache makes this a no-op.
# Called on demand by the KEDA tests (tests/testbed.py: build_keda()), so a CI
# run builds KEDA in parallel with the rest and only when those tests run.
#
# The source is the module zip github.com/kedacore/keda/v2@v$KEDA_VERSION as the
# proxy serves it (go mod download), built in a copy with its own go.mod and
# go.sum, so every dependency is the version KEDA's release pins (its replace
# and exclude directives apply as in KEDA's own build).
#
# Usage: build-keda.sh [--load|--deploy]. Progress goes to stderr; the directory
# holding keda, keda-adapter and KEDA's manifests (config/) to stdout. --load also
# builds the image and imports it into the test bed's containerd (root);
# --deploy also installs KEDA on the test bed (namespace keda: CRDs, RBAC, the
# operator, the metrics API server and the APIService v1beta1.external.metrics.k8s.io
# from KEDA's own config/, testbed/manifests/keda/ swapping the images) and waits
# until both run and the APIService is Available. Idempotent: a running KEDA of
# this version is left alone. One build at a time (a lock), as several sessions
# share this machine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"

KEDA_VERSION="${KEDA_VERSION:-2.21.0}"
KEDA_RECIPE=1                       # bump when the recipe below changes
KEDA_KEY="$KEDA_VERSION-$KEDA_RECIPE"
KEDA_OUT="$TOOLS_BIN/keda-$KEDA_KEY"
KEDA_IMAGE="docker.io/kfn/keda:$KEDA_VERSION"

command -v go >/dev/null 2>&1 || die "Go is needed to build KEDA from the Go module proxy"
mkdir -p "$TOOLS_BIN" "$CACHE/build"
exec 3>&1 1>&2    # progress on stderr; only the result goes to the caller's stdout (fd 3)

build_binaries() {
  [ -x "$KEDA_OUT/keda" ] && [ -x "$KEDA_OUT/keda-adapter" ] && return 0
  local work="$CACHE/build/keda-$KEDA_KEY" t0=$SECONDS src
  log "fetching github.com/kedacore/keda/v2 v$KEDA_VERSION from the Go module proxy"
  src=$(cd "$CACHE/build" && GOFLAGS=-mod=mod go mod download -json "github.com/kedacore/keda/v2@v$KEDA_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -f "$src/go.mod" ] || die "no source for keda v$KEDA_VERSION"
  rm -rf "$work"; mkdir -p "$work"
  cp -a "$src/." "$work/"; chmod -R u+w "$work"
  local ld="-s -w -X=github.com/kedacore/keda/v2/version.Version=$KEDA_VERSION"
  ld="$ld -X=github.com/kedacore/keda/v2/version.GitCommit=v$KEDA_VERSION"
  log "go build keda v$KEDA_VERSION: cmd/operator and cmd/adapter (cold: many scalers' SDKs, a long build)"
  mkdir -p "$KEDA_OUT.tmp"
  ( cd "$work"
    CGO_ENABLED=0 heartbeat "building keda" go build -trimpath -ldflags "$ld" -o "$KEDA_OUT.tmp/keda" ./cmd/operator
    CGO_ENABLED=0 heartbeat "building keda-adapter" go build -trimpath -ldflags "$ld" -o "$KEDA_OUT.tmp/keda-adapter" ./cmd/adapter )
  rm -rf "$KEDA_OUT.tmp/config"; cp -a "$work/config" "$KEDA_OUT.tmp/config"
  rm -rf "$KEDA_OUT"; mv "$KEDA_OUT.tmp" "$KEDA_OUT"
  rm -rf "$work"
  log "built keda v$KEDA_VERSION into $KEDA_OUT in $((SECONDS - t0)) s"
}

build_image() {
  [ "$(id -u)" = 0 ] || die "building and loading the KEDA image needs root (buildah, ctr)"
  local BUILDAH=(buildah --root "$CACHE/buildah/root" --runroot "$CACHE/buildah/run" --storage-driver overlay)
  local archive="$IMAGE_CACHE/keda-$KEDA_KEY.tar" mark="$RUN_DIR/imported/keda-$KEDA_KEY"
  mkdir -p "$IMAGE_CACHE"
  if [ ! -f "$archive" ]; then
    local t0=$SECONDS ctx="$IMAGE_CACHE/ctx/keda"
    rm -rf "$ctx"; mkdir -p "$ctx"
    cp "$here/images/keda/Dockerfile" "$KEDA_OUT/keda" "$KEDA_OUT/keda-adapter" "$ctx/"
    "${BUILDAH[@]}" bud --isolation chroot --pull-never --format docker -t "$KEDA_IMAGE" "$ctx" \
      > "$IMAGE_CACHE/keda.build.log" 2>&1 \
      || { tail -n 30 "$IMAGE_CACHE/keda.build.log"; die "building $KEDA_IMAGE failed"; }
    "${BUILDAH[@]}" push -q "$KEDA_IMAGE" "docker-archive:$archive.tmp:$KEDA_IMAGE" >/dev/null
    mv "$archive.tmp" "$archive"
    log "built $KEDA_IMAGE ($(du -m "$archive" | cut -f1) MB) in $((SECONDS - t0)) s"
  fi
  if [ ! -f "$mark" ] || ! ctr -a "$CONTAINERD_SOCK" -n k8s.io images ls -q | grep -qx "$KEDA_IMAGE"; then
    ctr -a "$CONTAINERD_SOCK" -n k8s.io images import "$archive" >/dev/null
    mkdir -p "$RUN_DIR/imported"; touch "$mark"
    log "loaded $KEDA_IMAGE into containerd"
  fi
}

deploy() {
  local kc=("$KUBECTL" --kubeconfig "$KUBECONFIG_PATH") t0=$SECONDS
  local render="$CACHE/build/keda-deploy-$KEDA_KEY"
  rm -rf "$render"; mkdir -p "$render/kfn"
  cp -a "$KEDA_OUT/config" "$render/config"
  sed "s/KEDA_VERSION/$KEDA_VERSION/" "$here/manifests/keda/kustomization.yaml" > "$render/kfn/kustomization.yaml"
  "${kc[@]}" kustomize "$render/kfn" > "$render/keda.yaml"
  log "applying KEDA v$KEDA_VERSION (CRDs, RBAC, operator, metrics API server, APIService)"
  "${kc[@]}" apply --server-side --force-conflicts --field-manager kfn-testbed -f "$render/keda.yaml" >/dev/null
  "${kc[@]}" -n keda rollout status deployment/keda-operator --timeout=300s >&2
  "${kc[@]}" -n keda rollout status deployment/keda-metrics-apiserver --timeout=300s >&2
  if ! "${kc[@]}" wait --for=condition=Available apiservice/v1beta1.external.metrics.k8s.io --timeout=60s >&2; then
    # The test bed's kube-apiserver has no aggregation-layer front-proxy certificate
    # (--proxy-client-cert-file, --requestheader-*): the HPA cannot read KEDA's metrics
    # through the APIService; KEDA itself (0 <-> 1) works. docs/keda.md says more.
    log "WARNING: APIService v1beta1.external.metrics.k8s.io is not Available: $("${kc[@]}" get apiservice \
      v1beta1.external.metrics.k8s.io -o jsonpath='{.status.conditions[0].message}')"
  fi
  log "KEDA v$KEDA_VERSION runs on the test bed ($((SECONDS - t0)) s)"
}

(
  exec 9>"$CACHE/build-tools-keda.lock"
  if ! flock -n 9; then
    log "another build holds $CACHE/build-tools-keda.lock; waiting for it"
    flock 9
  fi
  build_binaries
  case "${1:-}" in
    --load) build_image ;;
    --deploy) build_image; deploy ;;
    "") ;;
    *) die "unknown option $1 (--load, --deploy)" ;;
  esac
)
echo "$KEDA_OUT" >&3
