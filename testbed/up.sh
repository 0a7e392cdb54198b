#!/usr/bin/env bash
# Bring the kfn test bed up: a real single-node Kubernetes from upstream parts,
# no Docker. Idempotent: whatever already runs is kept, whatever died (a crash,
# kill -9, a reboot) is started again. CONTROL_PLANE_ONLY=1 starts only etcd,
# the API server, the controller-manager and the scheduler (seconds); the
# default adds containerd, kubelet, kube-proxy, kube-router and CoreDNS.
# The last line printed is `export KUBECONFIG=<path>`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
FULL=1
[ "${CONTROL_PLANE_ONLY:-0}" = 1 ] && FULL=0
[ "$(id -u)" = 0 ] || die "the test bed needs root (network devices, mounts, iptables)"
t_start=$SECONDS
# One cluster-up/cluster-down at a time: tests of several people share this machine.
mkdir -p "$CACHE"
exec 7>"$CACHE/cluster.lock"
flock -n 7 || { log "another cluster-up/cluster-down is running; waiting for it"; flock 7; }

PKI="$RUN_DIR/pki"
LOGS="$RUN_DIR/logs"
PIDS="$RUN_DIR/pids"
CONF="$RUN_DIR/conf"

bash "$here/deps.sh"
if [ "$FULL" = 1 ]; then bash "$here/build.sh"; else bash "$here/build.sh" --control-plane; fi
mkdir -p "$RUN_DIR" "$PKI" "$LOGS" "$PIDS" "$CONF" "$STATE_DIR"

# ---------------------------------------------------------------- sysctls
# Remember the values we (or the kubelet and kube-proxy) change, once, so
# cluster-down can put them back.
SYSCTLS="net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes"
if [ ! -f "$RUN_DIR/sysctl.saved" ]; then
  for s in $SYSCTLS; do
    v=$(sysctl -n "$s" 2>/dev/null) && printf '%s=%s\n' "$s" "$v"
  done > "$RUN_DIR/sysctl.saved.tmp"
  mv "$RUN_DIR/sysctl.saved.tmp" "$RUN_DIR/sysctl.saved"
fi

# ---------------------------------------------------------------- network
# The node address lives on an interface of its own: a stable, non-loopback
# address the API server can advertise and pods reach through the `kubernetes`
# Service. A bridge without ports serves, since this kernel has no dummy driver.
if ! ip link show "$NODE_IF" >/dev/null 2>&1; then
  log "creating interface $NODE_IF with $NODE_IP"
  ip link add "$NODE_IF" type bridge
fi
ip addr replace "$NODE_IP/32" dev "$NODE_IF"
ip link set "$NODE_IF" up
if [ "$FULL" = 1 ]; then
  sysctl -qw net.ipv4.ip_forward=1
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null || true
  [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] \
    || die "br_netfilter is not available: Services and NetworkPolicies need bridged traffic to pass iptables"
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
fi

# ---------------------------------------------------------------- PKI
# cert NAME CN [O] [SANS]: an EC key and a certificate signed by the test-bed CA (CA=NAME picks another CA).
cert() {
  local name=$1 cn=$2 org=${3:-} sans=${4:-} subj="/CN=$2" ca=${CA:-ca}
  [ -n "$org" ] && subj="/O=$org/CN=$cn"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } > "$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
# kubeconfig FILE CERT-NAME: a kubeconfig that authenticates with PKI/CERT-NAME.{crt,key}.
kubeconfig() {
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kfn-testbed
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
    client-key-data: $(base64 -w0 "$PKI/$2.key")
contexts:
- name: kfn-testbed
  context: {cluster: kfn-testbed, user: $2}
current-context: kfn-testbed
EOF
}
if [ ! -f "$PKI/.complete" ]; then
  log "creating certificates in $PKI"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=kfn-testbed-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$PKI/ca.crt" 2>/dev/null
  cert apiserver kube-apiserver "" "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:$API_SERVICE_IP,IP:$NODE_IP,IP:127.0.0.1"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin kfn-testbed-admin system:masters
  cert controller-manager system:kube-controller-manager
  cert scheduler system:kube-scheduler
  cert kubelet-client "system:node:$NODE_NAME" system:nodes
  cert kubelet "$NODE_NAME" "" "DNS:$NODE_NAME,IP:$NODE_IP"
  cert kube-proxy system:kube-proxy
  # kube-router reads pods, namespaces and policies cluster-wide; a bound role
  # would add nothing on a throw-away single-user cluster.
  cert kube-router kfn-testbed-kube-router system:masters
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  for c in admin controller-manager scheduler kubelet-client kube-proxy kube-router; do
    kubeconfig "$CONF/$c.kubeconfig" "$c"
  done
  touch "$PKI/.complete"
fi
# The aggregation layer (APIService, e.g. KEDA's external.metrics.k8s.io) needs the API server to present a client
# certificate to the extension server and that server to trust the identity headers it forwards. Kubernetes' PKI
# guide gives this its own CA, so no ordinary client certificate can pass as the front proxy. Outside the block
# above so a test bed made before it gains the files on its next start.
if [ ! -f "$PKI/front-proxy-client.crt" ]; then
  log "creating the front-proxy (aggregation layer) CA and client certificate"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/front-proxy-ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/front-proxy-ca.key" -subj "/CN=kfn-testbed-front-proxy-ca" -days 3650 \
    -sha256 -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$PKI/front-proxy-ca.crt" 2>/dev/null
  CA=front-proxy-ca cert front-proxy-client front-proxy-client
fi
cp "$CONF/admin.kubeconfig" "$KUBECONFIG_PATH.tmp" && mv "$KUBECONFIG_PATH.tmp" "$KUBECONFIG_PATH"

# put FILE: write stdin to FILE only if it differs (kube-proxy exits when its
# configuration file changes, and containerd reloads on a CNI config write).
put() {
  cat > "$1.new"
  if cmp -s "$1.new" "$1"; then rm -f "$1.new"; else mv "$1.new" "$1"; CHANGED="${CHANGED:-} $1"; fi
}

# ---------------------------------------------------------------- processes
# start NAME BINARY ARGS...: start BINARY detached unless NAME already runs.
# The pid file plus /proc/PID/exe tell a live component from a reused pid.
running() {
  local pidf="$PIDS/$1.pid" pid
  [ -f "$pidf" ] || return 1
  pid=$(cat "$pidf")
  [ -d "/proc/$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(cat "$PIDS/$1.exe" 2>/dev/null)" ]
}
# restart_if_changed NAME FILE: stop NAME if it runs with an older FILE (the
# next `start` brings it back with the new one; containers survive this).
restart_if_changed() {
  case " ${CHANGED:-} " in *" $2 "*) ;; *) return 0 ;; esac
  running "$1" || return 0
  local pid; pid=$(cat "$PIDS/$1.pid")
  log "${2#args:} changed: restarting $1"
  kill -TERM "$pid"
  for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
start() {
  local name=$1; shift
  local sig; sig=$(printf "%s\n" "$@" | sha256sum | cut -c1-16)
  if running "$name"; then
    if [ "$(cat "$PIDS/$name.args" 2>/dev/null)" = "$sig" ]; then
      log "$name is running (pid $(cat "$PIDS/$name.pid"))"
      return 0
    fi
    CHANGED="${CHANGED:-} args:$name"
    restart_if_changed "$name" "args:$name"
  fi
  log "starting $name (log: $LOGS/$name.log)"
  printf '\n==== %s start %s\n' "$(date -u +%FT%TZ)" "$name" >> "$LOGS/$name.log"
  # setsid: the component outlives the shell (make, pytest) that started it.
  # 7>&-: the component must not inherit (and hold forever) the cluster lock.
  setsid "$@" >> "$LOGS/$name.log" 2>&1 < /dev/null 7>&- &
  echo $! > "$PIDS/$name.pid"
  readlink -f "$1" > "$PIDS/$name.exe"
  echo "$sig" > "$PIDS/$name.args"
}
# wait_for WHAT SECONDS COMMAND...: poll COMMAND until it succeeds, with progress.
wait_for() {
  local what=$1 limit=$2 t0=$SECONDS next=10; shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - t0 >= limit )); then
      log "timed out after ${limit}s waiting for $what"
      return 1
    fi
    if (( SECONDS - t0 >= next )); then log "still waiting for $what ($((SECONDS - t0))s)"; next=$((next + 10)); fi
    sleep 0.5
  done
  log "$what: ok ($((SECONDS - t0))s)"
}
failed() { # NAME: show why a component did not come up, then fail
  log "last lines of $LOGS/$1.log:"
  tail -n 25 "$LOGS/$1.log" >&2 || true
  die "$1 did not become ready"
}
alive() { running "$1" || { log "$1 exited"; return 1; }; }
KUBECTL_ADMIN=("$KUBECTL" --kubeconfig "$KUBECONFIG_PATH")

start etcd "$ETCD_BIN/etcd" --name default --data-dir "$RUN_DIR/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster default=http://127.0.0.1:2380 --listen-metrics-urls "" \
  --unsafe-no-fsync --log-level warn
# --unsafe-no-fsync: a throw-away test cluster on a disk shared with builds; durability buys nothing here.
wait_for "etcd health" 60 curl -fsS http://127.0.0.1:2379/health || failed etcd

# OwnerReferencesPermissionEnforcement (on in OpenShift): a child with blockOwnerDeletion needs update on its
# owner's finalizers; on here so a missing grant in kfn's RBAC fails the tests as it would fail there.
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$API_PORT" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --enable-aggregator-routing=true \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --kubelet-preferred-address-types=InternalIP \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement \
  --allow-privileged=true --profiling=${KFN_TESTBED_APISERVER_PROFILING:-false} --event-ttl=1h
wait_for "kube-apiserver /readyz" 120 curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" \
  --key "$PKI/admin.key" "https://$NODE_IP:$API_PORT/readyz" || failed kube-apiserver

start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$CONF/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$CONF/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$CONF/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
  --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --allocate-node-cidrs=true --cluster-cidr="$CLUSTER_CIDR" --node-cidr-mask-size=24 \
  --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false
start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig="$CONF/scheduler.kubeconfig" \
  --authentication-kubeconfig="$CONF/scheduler.kubeconfig" \
  --authorization-kubeconfig="$CONF/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --profiling=false
wait_for "kube-controller-manager /healthz" 60 curl -fsSk https://127.0.0.1:10257/healthz \
  || failed kube-controller-manager
wait_for "kube-scheduler /healthz" 60 curl -fsSk https://127.0.0.1:10259/healthz || failed kube-scheduler
# The default ServiceAccount is what the operator's tests create pods and RBAC against.
wait_for "default ServiceAccount" 60 "${KUBECTL_ADMIN[@]}" -n default get serviceaccount default \
  || failed kube-controller-manager

if [ "$FULL" = 1 ]; then
  # -------------------------------------------------------------- containerd
  mkdir -p "$RUN_DIR/cni/net.d" "$RUN_DIR/cni/ipam"
  put "$CONF/containerd.toml" <<EOF
version = 2
root = "$RUN_DIR/containerd"
state = "$STATE_DIR/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$STATE_DIR/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$RUN_DIR/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  # Built by testbed/images.sh and imported below: nothing is ever pulled.
  sandbox_image = "docker.io/kfn/pause:dev"
  stream_server_address = "127.0.0.1"
  # This machine withholds CAP_SYS_RESOURCE even from root, so the negative
  # oom_score_adj the kubelet asks for (critical and Guaranteed pods) cannot be
  # set; clamp to containerd's own instead of failing every sandbox.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state under ours, not the machine's default /run/containerd.
        Root = "$STATE_DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN_DIR/cni/net.d"
EOF
  # CNI: one bridge, addresses from this node's pod CIDR, hairpin so a pod can
  # reach itself through its Service. No masquerade: nothing leaves the machine.
  put "$RUN_DIR/cni/net.d/10-kfn.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kfn",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$RUN_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # /run/netns is made (and mounted) by containerd on first use; remember if
  # it is ours so cluster-down can remove it.
  [ -f "$RUN_DIR/netns-mount-made" ] || mountpoint -q /run/netns 2>/dev/null || touch "$RUN_DIR/netns-mount-made"
  restart_if_changed containerd "$CONF/containerd.toml"
  start containerd /usr/bin/containerd --config "$CONF/containerd.toml"
  wait_for "containerd socket" 60 ctr -a "$CONTAINERD_SOCK" version || failed containerd

  # Images: pause and CoreDNS are needed by the node itself; kfn's images are
  # imported too when `make images` has built them.
  bash "$here/images.sh" --node

  # -------------------------------------------------------------- kubelet
  printf '# cluster DNS only: pods never get the host resolvers\n' | put "$RUN_DIR/resolv.conf"
  put "$CONF/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine is cgroup v1 (hybrid); from 1.35 the kubelet refuses v1 unless told (KEP-5573).
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$DNS_SERVICE_IP]
resolvConf: $RUN_DIR/resolv.conf
# Images cannot be pulled again here: never garbage-collect them, and only evict
# when the disk is really full.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
hairpinMode: hairpin-veth
shutdownGracePeriod: 0s
EOF
  restart_if_changed kubelet "$CONF/kubelet.yaml"
  start kubelet "$K8S_BIN/kubelet" --config="$CONF/kubelet.yaml" \
    --kubeconfig="$CONF/kubelet-client.kubeconfig" --root-dir="$RUN_DIR/kubelet" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP"

  # -------------------------------------------------------------- kube-proxy
  put "$CONF/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $CONF/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $CLUSTER_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
# 0 = leave the machine's conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  restart_if_changed kube-proxy "$CONF/kube-proxy.yaml"
  start kube-proxy "$K8S_BIN/kube-proxy" --config="$CONF/kube-proxy.yaml"

  wait_for "node $NODE_NAME Ready" 180 bash -c \
    "[ \"\$('${KUBECTL}' --kubeconfig '$KUBECONFIG_PATH' get node '$NODE_NAME' \
      -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]" || failed kubelet
  # -------------------------------------------------------------- kube-router
  # After the node registered: kube-router finds its node by name at start.
  # NetworkPolicy enforcement only (iptables + ipset); routing and service
  # proxying stay with the bridge and kube-proxy.
  start kube-router "$TOOLS_BIN/kube-router-$KUBE_ROUTER_VERSION" \
    --kubeconfig="$CONF/kube-router.kubeconfig" --hostname-override="$NODE_NAME" \
    --run-firewall=true --run-router=false --run-service-proxy=false \
    --service-cluster-ip-range="$SERVICE_CIDR" --enable-pod-egress=false \
    --metrics-port=0 --health-port=20244 --iptables-sync-period=30s

  wait_for "kube-proxy /healthz" 60 curl -fsS http://127.0.0.1:10256/healthz || failed kube-proxy
  wait_for "kube-router /healthz" 60 curl -fsS http://127.0.0.1:20244/healthz || failed kube-router

  # -------------------------------------------------------------- CoreDNS
  sed -e "s|@DNS_SERVICE_IP@|$DNS_SERVICE_IP|g" -e "s|@CLUSTER_DOMAIN@|$CLUSTER_DOMAIN|g" \
    "$here/manifests/coredns.yaml" | "${KUBECTL_ADMIN[@]}" apply -f - >/dev/null
  # Asked for real (a status can be stale right after a restart): an A query
  # for the API's Service name, sent to the DNS Service IP from the host.
  dns_probe='
import socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
query = struct.pack(">HHHHHH", 0x6b66, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.sendto(query, (server, 53))
reply = s.recv(512)
ident, flags, _, answers = struct.unpack(">HHHH", reply[:8])
sys.exit(0 if ident == 0x6b66 and flags & 0xF == 0 and answers > 0 else 1)
'
  wait_for "cluster DNS answering at $DNS_SERVICE_IP" 120 \
    python3 -c "$dns_probe" "$DNS_SERVICE_IP" "kubernetes.default.svc.$CLUSTER_DOMAIN" \
    || { "${KUBECTL_ADMIN[@]}" -n kube-system get pods -o wide >&2; die "CoreDNS did not become ready"; }
  for c in containerd kubelet kube-proxy kube-router; do alive "$c" || failed "$c"; done
fi

for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do alive "$c" || failed "$c"; done
mode="full node"; [ "$FULL" = 1 ] || mode="control plane only"
log "test bed is up ($mode) in $((SECONDS - t_start)) s; logs in $LOGS"
echo "export KUBECONFIG=$KUBECONFIG_PATH"
