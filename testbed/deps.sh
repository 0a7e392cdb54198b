#!/usr/bin/env bash
# Install the Debian packages the test bed needs, only if a command is missing
# (a warm machine skips apt entirely). Runs as root without a terminal (CI).
set -euo pipefail
. "$(dirname "$0")/env.sh"

# command -> Debian package that provides it
declare -A need=(
  [containerd]=containerd [runc]=runc [iptables]=iptables [conntrack]=conntrack
  [ipset]=ipset [debootstrap]=debootstrap [buildah]=buildah [openssl]=openssl
  [gcc]=gcc [ip]=iproute2 [nsenter]=util-linux [curl]=curl
)
missing=()
for cmd in "${!need[@]}"; do command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}"); done
# CNI plugins have no command on PATH.
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ] \
  || missing+=(containernetworking-plugins)
# gcc -static needs the C library archive.
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/aarch64-linux-gnu/libc.a ] || missing+=(libc6-dev)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
[ "$(id -u)" = 0 ] || die "missing packages ${missing[*]}; run as root to install them"
log "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
log "packages installed"
