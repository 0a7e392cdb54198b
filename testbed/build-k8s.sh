#!/usr/bin/env bash
# Build the pinned upstream Kubernetes components (and etcd) from the Go module
# proxy into a cache outside the repository. Reuses what is already built.
set -euo pipefail
. "$(dirname "$0")/env.sh"   # versions, cache paths, heartbeat
BIN="$K8S_BIN"
COMPONENTS="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"
log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
mkdir -p "$BIN"

missing=""
for c in $COMPONENTS; do [ -x "$BIN/$c" ] || missing="$missing $c"; done
if [ -n "$missing" ]; then
  work="$CACHE/build/k8s-$K8S_VERSION"; mkdir -p "$work"; cd "$work"
  minor="${K8S_VERSION#1.}"; minor="${minor%%.*}"
  if [ ! -f go.mod ]; then
    log "writing go.mod for k8s.io/kubernetes v$K8S_VERSION (staging modules -> v0.$minor.${K8S_VERSION##*.})"
    {
      echo "module kfn.dev/testbed/k8s"; echo; echo "go 1.25.0"; echo
      echo "require k8s.io/kubernetes v$K8S_VERSION"; echo; echo "replace ("
      for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
        cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
        cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms \
        kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
        mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller; do
        echo "	k8s.io/$m => k8s.io/$m v0.${K8S_VERSION#1.}"
      done
      echo ")"
    } > go.mod
    printf 'package main\n' > doc.go
  fi
  ver="v$K8S_VERSION"
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$ver -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=2026-01-01T00:00:00Z"
  done
  for c in $missing; do
    log "go build $c (first build of the shared packages takes a while on 2 cores)"
    GOFLAGS=-mod=mod CGO_ENABLED=0 heartbeat "building $c" \
      go build -trimpath -ldflags "$ld" -o "$BIN/$c" "k8s.io/kubernetes/cmd/$c"
    log "built $BIN/$c"
  done
fi

EBIN="$CACHE/bin/etcd-$ETCD_VERSION"
if [ ! -x "$EBIN/etcd" ]; then
  work="$CACHE/build/etcd-$ETCD_VERSION"; mkdir -p "$work" "$EBIN"; cd "$work"
  if [ ! -f go.mod ]; then
    printf 'module kfn.dev/testbed/etcd\n\ngo 1.25.0\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' "$ETCD_VERSION" > go.mod
    printf 'package main\n' > doc.go
  fi
  log "go build etcd v$ETCD_VERSION"
  GOFLAGS=-mod=mod CGO_ENABLED=0 heartbeat "building etcd" \
    go build -trimpath -ldflags "-s -w" -o "$EBIN/etcd" go.etcd.io/etcd/server/v3
  log "built $EBIN/etcd"
fi
log "binaries ready in $BIN and $EBIN"
