#!/usr/bin/env bash
# Build the test bed's other binaries into the cache, reusing what is built:
# CoreDNS (only the plugins cluster DNS needs) and kube-router (NetworkPolicy
# enforcement) from the Go module proxy, and the pause binary from
# testbed/pause/pause.c.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
mkdir -p "$TOOLS_BIN"

# gobuild NAME VERSION MODULE-REQUIREMENT PACKAGE [LDFLAGS]: build PACKAGE from a
# throw-away module that requires MODULE-REQUIREMENT, into $TOOLS_BIN/NAME-VERSION.
gobuild() {
  local name=$1 version=$2 req=$3 pkg=$4 ld="-s -w ${5:-}"
  local out="$TOOLS_BIN/$name-$version"
  [ -x "$out" ] && return 0
  local work="$CACHE/build/$name-$version"; mkdir -p "$work"
  log "go build $name v$version (from the Go module proxy)"
  local t0=$SECONDS
  ( cd "$work"
    [ -f go.mod ] || printf 'module kfn.dev/testbed/%s\n\ngo 1.25.0\n\nrequire %s\n' "$name" "$req" > go.mod
    GOFLAGS=-mod=mod CGO_ENABLED=0 heartbeat "building $name" go build -trimpath -ldflags "$ld" -o "$out.tmp" "$pkg" )
  mv "$out.tmp" "$out"
  log "built $out in $((SECONDS - t0)) s"
}

pause_src="$here/pause/pause.c"
pause_out="$TOOLS_BIN/pause-$(sha256sum "$pause_src" | cut -c1-12)"
if [ ! -x "$pause_out" ]; then
  log "cc pause (static)"
  gcc -static -Os -Wall -Wextra -o "$pause_out" "$pause_src"
fi
ln -sfn "$(basename "$pause_out")" "$TOOLS_BIN/pause"

# CoreDNS: our own main package (testbed/coredns/main.go) in the throw-away module.
mkdir -p "$CACHE/build/coredns-$COREDNS_VERSION"
cp "$here/coredns/main.go" "$CACHE/build/coredns-$COREDNS_VERSION/main.go"
gobuild coredns "$COREDNS_VERSION" "github.com/coredns/coredns v$COREDNS_VERSION" . \
  "-X github.com/coredns/coredns/coremain.GitCommit=v$COREDNS_VERSION"

gobuild kube-router "$KUBE_ROUTER_VERSION" "github.com/cloudnativelabs/kube-router/v2 v$KUBE_ROUTER_VERSION" \
  github.com/cloudnativelabs/kube-router/v2/cmd/kube-router \
  "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=v$KUBE_ROUTER_VERSION"

log "extras ready in $TOOLS_BIN"
