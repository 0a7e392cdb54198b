#!/usr/bin/env bash
# Install the Debian packages the test bed needs, only if a command is missing
# (a warm machine skips apt entirely). Runs as root without a terminal (CI).
set -euo pipefail
. "$(dirname "$0")/env.sh"

command -v apt-get >/dev/null 2>&1 || die "the test bed installs its packages with apt-get: it needs a Debian-family Linux (Debian, Ubuntu)"

# command -> Debian package that provides it
declare -A need=(
  [containerd]=containerd [runc]=runc [iptables]=iptables [conntrack]=conntrack
  [ipset]=ipset [debootstrap]=debootstrap [buildah]=buildah [openssl]=openssl
  [gcc]=gcc [ip]=iproute2 [nsenter]=util-linux [curl]=curl [make]=make [ps]=procps
  [flock]=util-linux [go]=golang-go [python3]=python3 [git]=git
  [mvn]=maven  # resolves the Kafka test broker's jars from Maven Central (images.sh)
  [qemu-aarch64-static]=qemu-user-static  # runs the arm64 runtime image's Python in tests (no binfmt_misc)
)
missing=()
for cmd in "${!need[@]}"; do command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}"); done
# CNI plugins have no command on PATH.
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ] \
  || missing+=(containernetworking-plugins)
# gcc -static needs the C library archive.
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/aarch64-linux-gnu/libc.a ] || missing+=(libc6-dev)

# the virtual environment of `make venv`
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)

if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]}; run as root to install them"
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null \
    || die "apt-get could not install ${missing[*]}"
  log "packages installed"
fi

# Go: the distribution's when new enough, else the toolchain from the Go module proxy
# (golang.org/toolchain is a module like any other: one zip, checked by the proxy's sum database).
go_version() { go env GOVERSION 2>/dev/null | sed 's/^go//'; }
older() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" != "$2" ]; }  # older A B: A < B
have=$(go_version || true)
if [ -z "$have" ] || older "$have" "$GO_MIN"; then
  case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) die "no Go toolchain for $(uname -m) on the module proxy" ;; esac
  mod="v0.0.1-go$GO_TOOLCHAIN_VERSION.linux-$arch"
  log "Go ${have:-missing} is older than $GO_MIN: fetching golang.org/toolchain@$mod from the Go module proxy"
  tmp=$(mktemp -d)
  curl -fsSL --retry 3 -o "$tmp/go.zip" "${GOPROXY_URL:-https://proxy.golang.org}/golang.org/toolchain/@v/$mod.zip" \
    || die "could not download the Go toolchain $mod from the Go module proxy"
  python3 - "$tmp/go.zip" "$tmp/x" <<'PY'
import os, sys, zipfile
# module zips keep no file modes: like the go command, make bin/ and pkg/tool/ executable
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        path = z.extract(info, sys.argv[2])
        if "/bin/" in info.filename or "/pkg/tool/" in info.filename:
            os.chmod(path, 0o755)
PY
  rm -rf "$GO_DIR" && mv "$tmp/x/golang.org/toolchain@$mod" "$GO_DIR" && rm -rf "$tmp"
  "$GO_DIR/bin/go" version >/dev/null || die "the Go toolchain in $GO_DIR does not run"
  log "Go $GO_TOOLCHAIN_VERSION ready in $GO_DIR"
fi
