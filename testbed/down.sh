#!/usr/bin/env bash
# Tear the kfn test bed down and remove everything it made: processes
# (components, containerd shims, containers), mounts, pod network namespaces,
# veths, the bridges, iptables chains and ipsets, kubepods cgroups, changed
# sysctls, and the run directories. The cache (built binaries and images) stays.
# Works after a crash too: processes are found by their executables and
# sockets, not only by pid files.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
[ "$(id -u)" = 0 ] || die "tearing the test bed down needs root"
PIDS="$RUN_DIR/pids"
mkdir -p "$CACHE"
exec 7>"$CACHE/cluster.lock"
flock -n 7 || { log "another cluster-up/cluster-down is running; waiting for it"; flock 7; }

# our_pids: every live process that belongs to the test bed.
our_pids() {
  local p exe cmd
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    case "$exe" in
      "$K8S_BIN"/*|"$ETCD_BIN"/*|"$TOOLS_BIN"/*) echo "${p#/proc/}"; continue ;;
    esac
    cmd=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
    case "$cmd" in
      *"$CONTAINERD_SOCK"*|*"$RUN_DIR/conf/containerd.toml"*) echo "${p#/proc/}" ;;
    esac
  done
  # Containers (their processes live in the kubelet's kubepods cgroups).
  cat /sys/fs/cgroup/pids/kubepods/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/cgroup.procs \
    /sys/fs/cgroup/pids/kubepods/*/*/cgroup.procs /sys/fs/cgroup/pids/kubepods/*/*/*/cgroup.procs 2>/dev/null
}

# stop NAME...: SIGTERM the components from their pid files, SIGKILL what
# still runs after 10 s.
stop() {
  local name pid pids=()
  for name in "$@"; do
    [ -f "$PIDS/$name.pid" ] || continue
    pid=$(cat "$PIDS/$name.pid")
    if [ -d "/proc/$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(cat "$PIDS/$name.exe" 2>/dev/null)" ]; then
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
    rm -f "$PIDS/$name.pid"
  done
  for _ in $(seq 100); do
    local alive=0
    for pid in "${pids[@]}"; do [ -d "/proc/$pid" ] && alive=1; done
    [ "$alive" = 0 ] && return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null
}

log "tearing the test bed down"
stop kubelet
# Containers first, while containerd can still kill them cleanly.
if [ -S "$CONTAINERD_SOCK" ] && timeout 5 ctr -a "$CONTAINERD_SOCK" version >/dev/null 2>&1; then
  C=(ctr -a "$CONTAINERD_SOCK" -n k8s.io)
  tasks=$("${C[@]}" tasks ls -q 2>/dev/null)
  [ -n "$tasks" ] && log "killing $(echo "$tasks" | wc -l) containers"
  for t in $tasks; do "${C[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
  for t in $tasks; do
    for _ in $(seq 50); do "${C[@]}" tasks delete "$t" >/dev/null 2>&1 && break; sleep 0.1; done
  done
  for c in $("${C[@]}" containers ls -q 2>/dev/null); do "${C[@]}" containers delete "$c" >/dev/null 2>&1; done
fi
stop kube-router kube-proxy containerd kube-scheduler kube-controller-manager
stop kube-apiserver
stop etcd
# Anything left (shims, orphaned containers, components whose pid file was lost).
left=$(our_pids | sort -u)
if [ -n "$left" ]; then
  log "killing leftover processes: $(echo $left)"
  kill -KILL $left 2>/dev/null
  sleep 0.5
fi

# Pod network namespaces: the ones holding an address from our pod range.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
  if ip -n "$ns" -4 -o addr show 2>/dev/null | grep -q " ${POD_GATEWAY%.*}\."; then
    ip netns delete "$ns" 2>/dev/null && log "deleted network namespace $ns"
  fi
done

# Mounts under our directories, deepest first (mountinfo escapes spaces as \040).
for dir in "$RUN_DIR" "$STATE_DIR"; do
  awk -v d="$dir" '{ m = $5; gsub(/\\040/, " ", m); if (m == d || index(m, d "/") == 1) print m }' \
    /proc/self/mountinfo | sort -r | while IFS= read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
done
# /run/netns is a mount that `ip netns`/containerd make on first use; undo it
# if the test bed made it and nothing else uses it.
if [ -f "$RUN_DIR/netns-mount-made" ] && [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
  umount /run/netns 2>/dev/null; rmdir /run/netns 2>/dev/null
fi

# Network devices: veths on the pod bridge, the bridge, the node interface.
for dev in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
  ip link delete "$dev" 2>/dev/null
done
for dev in "$BRIDGE" "$NODE_IF"; do
  ip link show "$dev" >/dev/null 2>&1 && ip link delete "$dev" && log "deleted interface $dev"
done

# iptables: drop the chains kube-proxy, kube-router, the kubelet and CNI made,
# and the rules that jump to them; other rules stay as they are.
OUR_CHAINS='(KUBE-[A-Z0-9-]*|CNI-[A-Za-z0-9-]*)'
for ipt in iptables ip6tables; do
  command -v "$ipt-save" >/dev/null || continue
  for table in filter nat mangle raw; do
    # Retried: a restore fails if another program changes the table meanwhile.
    for attempt in 1 2 3 4 5; do
      dump=$("$ipt-save" -t "$table" 2>/dev/null) || break
      # A here-string, not `echo | grep -q`: grep stopping early would SIGPIPE
      # echo and, under pipefail, turn a match into a failure.
      grep -Eq "^:$OUR_CHAINS |-[jg] $OUR_CHAINS( |$)|kube-router" <<< "$dump" || break
      if err=$(echo "$dump" | grep -Ev "^:$OUR_CHAINS |^-A $OUR_CHAINS |-[jg] $OUR_CHAINS( |$)|kube-router" \
        | "$ipt-restore" -T "$table" 2>&1); then
        log "removed test-bed chains from $ipt table $table"
      else
        log "could not clean $ipt table $table (attempt $attempt): $err"
        sleep 1
      fi
    done
  done
done
for set in $(ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router)'); do
  ipset destroy "$set" 2>/dev/null || log "could not destroy ipset $set: $(ipset destroy "$set" 2>&1)"
done
command -v conntrack >/dev/null && conntrack -D -d 198.18.0.0/15 >/dev/null 2>&1
command -v conntrack >/dev/null && conntrack -D -s 198.18.0.0/15 >/dev/null 2>&1

# cgroups the kubelet made (cgroupfs driver, cgroup v1 hierarchies and v2).
for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  [ -d "$root" ] && find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null
done

# Kernel settings back to what they were before cluster-up.
if [ -f "$RUN_DIR/sysctl.saved" ]; then
  while IFS='=' read -r key value; do sysctl -qw "$key=$value" 2>/dev/null; done < "$RUN_DIR/sysctl.saved"
fi

rm -rf "$RUN_DIR" "$STATE_DIR"
left=$(our_pids | sort -u)
[ -z "$left" ] || die "processes still running: $(echo $left)"
log "test bed is down"
