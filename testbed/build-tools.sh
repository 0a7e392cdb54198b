#!/usr/bin/env bash
# Build the tools some tests need, from the Go module proxy at pinned versions,
# into the test-bed cache ($TOOLS_BIN); a warm cache makes this a no-op. Called
# on demand by the tests that need a tool (tests/testbed.py: build_tool()).
#
#   helm         helm.sh/helm/v3 cmd/helm
#   argo-health  testbed/argo-health: Argo CD's own resource health assessment
#                (github.com/argoproj/argo-cd/v3 util/lua + gitops-engine pkg/health)
#   nats-server  github.com/nats-io/nats-server/v2: the async-invoke queue (JetStream);
#                Debian's 2.9 lacks what kfn relies on (per-message TTL, 2.11+)
#   otelcol      testbed/otelcol: a minimal OpenTelemetry Collector (go.opentelemetry.io/collector core
#                modules: OTLP receiver, batch, debug and OTLP/HTTP exporters) for the tracing tests
#
# Usage: build-tools.sh [helm|argo-health|nats-server|otelcol]...  (default: helm, argo-health). Progress goes to
# stderr; the path of each binary, one a line, to stdout. One build of each tool
# at a time (a lock), as several sessions share this machine.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"

HELM_VERSION="${HELM_VERSION:-3.22.0}"
ARGOCD_VERSION="${ARGOCD_VERSION:-3.6.1}"
# Argo CD 3.6 needs Go >= 1.27 (its go.mod); the go command fetches this
# toolchain as the module golang.org/toolchain from the same proxy, once.
ARGOCD_GO_TOOLCHAIN="${ARGOCD_GO_TOOLCHAIN:-go1.27.4}"
NATS_SERVER_VERSION="${NATS_SERVER_VERSION:-2.15.3}"
# nats-server 2.15 needs Go >= 1.26 (its go.mod); fetched from the proxy like Argo CD's.
NATS_GO_TOOLCHAIN="${NATS_GO_TOOLCHAIN:-go1.26.8}"
# One collector release for every module (core v0.165.0 goes with the v1.71.0 modules).
OTELCOL_VERSION="${OTELCOL_VERSION:-0.165.0}"
OTELCOL_STABLE_VERSION="${OTELCOL_STABLE_VERSION:-1.71.0}"

command -v go >/dev/null 2>&1 || die "Go is needed to build helm and argo-health from the Go module proxy"
mkdir -p "$TOOLS_BIN" "$CACHE/build"
exec 3>&1 1>&2    # progress on stderr; only the results go to the caller's stdout (fd 3)

# gomod_build NAME KEY PACKAGE LDFLAGS: go build PACKAGE in the prepared module
# $CACHE/build/NAME-KEY into $TOOLS_BIN/NAME-KEY, unless it is there already.
gomod_build() {
  local name=$1 key=$2 pkg=$3 ld="-s -w $4"
  local out="$TOOLS_BIN/$name-$key" work="$CACHE/build/$name-$key" t0=$SECONDS
  log "go build $name $key (from the Go module proxy)"
  ( cd "$work"
    GOFLAGS=-mod=mod CGO_ENABLED=0 heartbeat "building $name" go build -trimpath -ldflags "$ld" -o "$out.tmp" "$pkg" )
  mv "$out.tmp" "$out"
  log "built $out in $((SECONDS - t0)) s"
}

build_helm() {
  # -2: the recipe's revision (ldflags below), so a changed recipe rebuilds
  local key="$HELM_VERSION-2" out="$TOOLS_BIN/helm-$HELM_VERSION-2"
  if [ ! -x "$out" ]; then
    local work="$CACHE/build/helm-$key"; mkdir -p "$work"
    printf 'module kfn.dev/testbed/helm\n\ngo 1.26.0\n\nrequire helm.sh/helm/v3 v%s\n' "$HELM_VERSION" > "$work/go.mod"
    # As helm's Makefile: the Kubernetes version `helm template`/`lint` assume
    # offline is client-go's (v0.37 -> 1.37), not the built-in 1.20.
    local cg; cg=$(cd "$work" && GOFLAGS=-mod=mod go list -m -f '{{.Version}}' k8s.io/client-go)
    local minor; minor=$(echo "$cg" | cut -d. -f2)
    local x="-X helm.sh/helm/v3"
    gomod_build helm "$key" helm.sh/helm/v3/cmd/helm "$x/internal/version.version=v$HELM_VERSION \
      $x/pkg/lint/rules.k8sVersionMajor=1 $x/pkg/lint/rules.k8sVersionMinor=$minor \
      $x/pkg/chartutil.k8sVersionMajor=1 $x/pkg/chartutil.k8sVersionMinor=$minor"
  fi
  echo "$out" >&3
}

build_argo_health() {
  # keyed by the Argo CD version and our source, so an edit of main.go rebuilds
  local src="$here/argo-health/main.go"
  local key; key="$ARGOCD_VERSION-$(sha256sum "$src" | cut -c1-12)"
  local out="$TOOLS_BIN/argo-health-$key"
  if [ ! -x "$out" ]; then
    local work="$CACHE/build/argo-health-$key"; mkdir -p "$work"
    export GOTOOLCHAIN="$ARGOCD_GO_TOOLCHAIN"
    log "fetching the go.mod of github.com/argoproj/argo-cd/v3 v$ARGOCD_VERSION (toolchain $GOTOOLCHAIN)"
    local argomod
    argomod=$(cd "$work" && go mod download -json "github.com/argoproj/argo-cd/v3@v$ARGOCD_VERSION" \
      | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    [ -f "$argomod" ] || die "no go.mod for argo-cd v$ARGOCD_VERSION"
    # A dependency's replace directives do not apply to the main module: copy
    # Argo CD's (k8s.io staging modules and pins) except its local gitops-engine
    # path, which the proxy serves as the module gitops-engine/v3 of the same version.
    {
      printf 'module kfn.dev/testbed/argo-health\n\ngo 1.27.0\n\nrequire (\n'
      printf '\tgithub.com/argoproj/argo-cd/v3 v%s\n\tgithub.com/argoproj/argo-cd/gitops-engine/v3 v%s\n)\n\nreplace (\n' \
        "$ARGOCD_VERSION" "$ARGOCD_VERSION"
      awk '/^replace \($/ {inblk=1; next} inblk && /^\)$/ {inblk=0; next}
           inblk && /=>/ && $0 !~ /=> \.\// {print}' "$argomod"
      printf ')\n'
    } > "$work/go.mod"
    cp "$src" "$work/main.go"
    gomod_build argo-health "$key" . ""
  fi
  echo "$out" >&3
}

build_nats_server() {
  local key="$NATS_SERVER_VERSION-1" out="$TOOLS_BIN/nats-server-$NATS_SERVER_VERSION-1"
  if [ ! -x "$out" ]; then
    local work="$CACHE/build/nats-server-$key"; mkdir -p "$work"
    export GOTOOLCHAIN="$NATS_GO_TOOLCHAIN"
    printf 'module kfn.dev/testbed/nats-server\n\ngo 1.26.0\n\nrequire github.com/nats-io/nats-server/v2 v%s\n' \
      "$NATS_SERVER_VERSION" > "$work/go.mod"
    # As nats-server's release build: the commit is unknown here, the version is the module's.
    gomod_build nats-server "$key" github.com/nats-io/nats-server/v2 \
      "-X github.com/nats-io/nats-server/v2/server.gitCommit=v$NATS_SERVER_VERSION"
  fi
  echo "$out" >&3
}

build_otelcol() {
  # keyed by the collector release and our source, so an edit of main.go rebuilds
  local src="$here/otelcol/main.go"
  local key; key="$OTELCOL_VERSION-$(sha256sum "$src" | cut -c1-12)"
  local out="$TOOLS_BIN/otelcol-$key"
  if [ ! -x "$out" ]; then
    local work="$CACHE/build/otelcol-$key" c="go.opentelemetry.io/collector"
    local v="v$OTELCOL_VERSION" s="v$OTELCOL_STABLE_VERSION"
    mkdir -p "$work"
    {
      printf 'module kfn.dev/testbed/otelcol\n\ngo 1.25.0\n\nrequire (\n'
      printf '\t%s/otelcol %s\n\t%s/receiver/otlpreceiver %s\n\t%s/processor/batchprocessor %s\n' "$c" "$v" "$c" "$v" "$c" "$v"
      printf '\t%s/exporter/debugexporter %s\n\t%s/exporter/otlphttpexporter %s\n' "$c" "$v" "$c" "$v"
      printf '\t%s/service %s\n' "$c" "$v"
      for m in component confmap confmap/provider/envprovider confmap/provider/fileprovider \
               confmap/provider/yamlprovider exporter processor receiver; do
        printf '\t%s/%s %s\n' "$c" "$m" "$s"
      done
      printf ')\n'
    } > "$work/go.mod"
    cp "$src" "$work/main.go"
    gomod_build otelcol "$key" . "-X main.version=$OTELCOL_VERSION"
  fi
  echo "$out" >&3
}

# locked NAME FUNCTION: run FUNCTION holding $CACHE/build-tools-NAME.lock.
locked() {
  (
    exec 9>"$CACHE/build-tools-$1.lock"
    if ! flock -n 9; then
      log "another build holds $CACHE/build-tools-$1.lock; waiting for it"
      flock 9
    fi
    "$2"
  )
}

[ $# -gt 0 ] || set -- helm argo-health
for tool in "$@"; do
  case "$tool" in
    helm) locked helm build_helm ;;
    argo-health) locked argo-health build_argo_health ;;
    nats-server) locked nats-server build_nats_server ;;
    otelcol) locked otelcol build_otelcol ;;
    *) die "unknown tool $tool (helm, argo-health, nats-server, otelcol)" ;;
  esac
done
