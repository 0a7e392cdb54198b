#!/usr/bin/env bash
# Build every binary the test bed runs, into the cache outside the repository;
# a warm cache makes this a no-op. One build of each part at a time (a lock),
# since several people and test sessions share this machine. --control-plane
# builds only what CONTROL_PLANE_ONLY=1 needs (Kubernetes and etcd).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
mkdir -p "$CACHE"
command -v go >/dev/null 2>&1 || die "Go is needed to build the test bed's Kubernetes binaries (go.mod asks for go 1.25)"
# locked NAME SCRIPT: run SCRIPT holding $CACHE/NAME.lock.
locked() {
  (
    exec 9>"$CACHE/$1.lock"
    if ! flock -n 9; then
      log "another build holds $CACHE/$1.lock; waiting for it"
      flock 9
    fi
    bash "$2"
  )
}
locked build-k8s "$here/build-k8s.sh"
[ "${1:-}" = --control-plane ] || locked build-extras "$here/build-extras.sh"
