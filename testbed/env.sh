#!/usr/bin/env bash
# Shared settings of the kfn test bed: pinned versions, where things live, and
# the network plan. Sourced by every testbed/*.sh script; `bash testbed/env.sh
# print` prints the values as KEY=VALUE lines for tests/testbed.py.
#
# Every address is inside 198.18.0.0/15 (the block set aside for network
# tests), so test-bed traffic is obviously local and never confused with a real
# 10/8, 172.16/12 or 192.168/16 network.

K8S_VERSION="${K8S_VERSION:-1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
COREDNS_VERSION="${COREDNS_VERSION:-1.14.7}"
KUBE_ROUTER_VERSION="${KUBE_ROUTER_VERSION:-2.1.0}"

# Built binaries and images: kept across cluster-up/down, outside the repository.
CACHE="${KFN_TESTBED_CACHE:-$HOME/.cache/kfn-testbed}"
K8S_BIN="$CACHE/bin/k8s-$K8S_VERSION"
ETCD_BIN="$CACHE/bin/etcd-$ETCD_VERSION"
TOOLS_BIN="$CACHE/bin/tools"
IMAGE_CACHE="$CACHE/images"
KUBECTL="$K8S_BIN/kubectl"

# Cluster state (etcd data, certificates, logs, kubelet and containerd roots):
# removed by cluster-down.
RUN_DIR="${KFN_TESTBED_RUN:-/var/lib/kfn-testbed}"
# Sockets and runtime state of containerd (short paths: unix sockets are limited to 108 bytes).
STATE_DIR="${KFN_TESTBED_STATE:-/run/kfn-testbed}"
KUBECONFIG_PATH="$RUN_DIR/kubeconfig"
CONTAINERD_SOCK="$STATE_DIR/containerd/containerd.sock"

NODE_NAME="kfn-node"
NODE_IP="198.18.255.1"          # on NODE_IF below; the API server advertises it
NODE_IF="kfn-node0"             # port-less bridge holding NODE_IP (this kernel has no dummy driver)
BRIDGE="kfnbr0"                 # CNI bridge; the pods' gateway
CLUSTER_CIDR="198.18.0.0/17"    # pod addresses of the cluster
POD_CIDR="198.18.0.0/24"        # this node's share (the first /24 the controller-manager allocates)
POD_GATEWAY="198.18.0.1"
SERVICE_CIDR="198.19.0.0/16"
API_SERVICE_IP="198.19.0.1"
DNS_SERVICE_IP="198.19.0.10"
CLUSTER_DOMAIN="cluster.local"
API_PORT=6443

# Go: the test bed's binaries need GO_MIN (their go.mod says so). Where the distribution's Go is older,
# deps.sh puts the Go toolchain from the module proxy (golang.org/toolchain) here, ahead on PATH.
GO_MIN="1.25"
GO_TOOLCHAIN_VERSION="1.25.14"
GO_DIR="$CACHE/go-$GO_TOOLCHAIN_VERSION"
[ -x "$GO_DIR/bin/go" ] && PATH="$GO_DIR/bin:$PATH" && export GOTOOLCHAIN=local

log() { printf '[testbed %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
# heartbeat WHAT COMMAND...: run COMMAND, saying every 30 s that WHAT still runs
# (a cold Go build of kube-apiserver is minutes of silence otherwise).
heartbeat() {
  local what=$1 t0=$SECONDS pid rc; shift
  "$@" & pid=$!
  while ! wait_pid_for 30 "$pid"; do log "still $what ($((SECONDS - t0)) s)"; done
  wait "$pid"; rc=$?
  return $rc
}
# wait_pid_for SECONDS PID: true once PID has exited, false if it still runs after SECONDS.
wait_pid_for() {
  local i
  for ((i = 0; i < $1 * 2; i++)); do kill -0 "$2" 2>/dev/null || return 0; sleep 0.5; done
  ! kill -0 "$2" 2>/dev/null
}
die() { printf '[testbed %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

if [ "${BASH_SOURCE[0]}" = "$0" ] && [ "${1:-}" = "print" ]; then
  for v in K8S_VERSION ETCD_VERSION COREDNS_VERSION KUBE_ROUTER_VERSION CACHE K8S_BIN ETCD_BIN \
    TOOLS_BIN IMAGE_CACHE KUBECTL RUN_DIR STATE_DIR KUBECONFIG_PATH CONTAINERD_SOCK NODE_NAME NODE_IP \
    NODE_IF BRIDGE CLUSTER_CIDR POD_CIDR POD_GATEWAY SERVICE_CIDR API_SERVICE_IP DNS_SERVICE_IP \
    CLUSTER_DOMAIN API_PORT; do
    printf '%s=%s\n' "$v" "${!v}"
  done
fi
