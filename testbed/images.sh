#!/usr/bin/env bash
# Build kfn's container images without a registry and load them into the test
# bed's containerd (`make images`).
#
#   base      Debian bookworm made with debootstrap (cached as a tarball), with
#             python3 and python3-venv: stands in for the public python base.
#   kfn       images/kfn/Dockerfile: kfn and its dependencies (operator,
#             gateway, agent), from a wheel of the working tree.
#   python3.11  images/python3.11/Dockerfile (the agent engineer's runtime
#             image), or a placeholder until that exists; plus its arm64 twin and an
#             OCI image index of both (testbed/images-arm64.sh, docs/architectures.md;
#             kfn too).
#   pause, coredns  the node's own images, FROM scratch with binaries built by
#             testbed/build-extras.sh.
#   redis     testbed/images/redis/Dockerfile: Debian's redis-server for the
#             Redis stream destinations' tests (always :dev, shared).
#   nats      images/nats/Dockerfile: nats-server built from the Go module proxy
#             (testbed/build-tools.sh nats-server), tagged with its version.
#   kafka, rabbitmq, moto  testbed/images/*/Dockerfile: the event source brokers' tests (always :dev, shared):
#             Kafka (KRaft) from Maven Central jars (Debian's maven resolves pom.xml) on Debian's JRE, Debian's
#             rabbitmq-server, moto's SQS-compatible server from PyPI. Built in parallel with the rest.
#
# Dockerfiles for users start with `ARG BASE=<public image>` / `FROM ${BASE}`;
# here they are built with `buildah bud --build-arg BASE=<local base>`, so what
# users get is exactly what is tested. Each build context is a copy of the
# image's folder plus `wheels/`: the kfn wheel and its dependencies for kfn,
# and wheels of `requirements.txt` where the folder has one. An image is rebuilt
# only when the hash of its inputs changes; archives live in the cache.
#
# --node: only what the node needs to start (pause, CoreDNS), plus importing
# kfn images already built; used by testbed/up.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
. "$here/env.sh"
NODE_ONLY=0
[ "${1:-}" = --node ] && NODE_ONLY=1
[ "$(id -u)" = 0 ] || die "building images needs root (buildah, debootstrap)"
bash "$here/deps.sh"
mkdir -p "$IMAGE_CACHE/ctx"
exec 8>"$CACHE/images.lock"
flock -n 8 || { log "another image build holds $CACHE/images.lock; waiting"; flock 8; }

# Tag of kfn's own images (kfn, python3.11): KFN_IMAGE_TAG=NAME builds and loads
# docker.io/kfn/kfn:NAME, so several working trees can share one node; the
# node's own images (pause, coredns) are always :dev.
TAG="${KFN_IMAGE_TAG:-dev}"
NATS_SERVER_VERSION="${NATS_SERVER_VERSION:-2.15.3}"  # as build-tools.sh; kfn.asyncinvoke.manifests.NATS_VERSION
tag_of() { case $1 in pause|coredns|redis|kafka|rabbitmq|moto) echo dev ;; nats) echo "$NATS_SERVER_VERSION" ;; *) echo "$TAG" ;; esac; }
# archive/hash/mark file stem of an image: NAME for :dev, NAME-TAG otherwise
stem_of() { local t; t=$(tag_of "$1"); [ "$t" = dev ] && echo "$1" || echo "$1-$t"; }

# nats-server builds (Go, ~2 min cold) while the Python images build; waited for before its image.
nats_log="$CACHE/build/nats-server.log"
if [ "$NODE_ONLY" = 0 ]; then
  mkdir -p "$CACHE/build"
  NATS_SERVER_VERSION="$NATS_SERVER_VERSION" bash "$here/build-tools.sh" nats-server > "$nats_log.out" 2> "$nats_log" &
  nats_pid=$!
fi

BUILDAH=(buildah --root "$CACHE/buildah/root" --runroot "$CACHE/buildah/run" --storage-driver overlay)
PIP=("$repo/.venv/bin/python" -m pip)
[ -x "$repo/.venv/bin/python" ] || PIP=(python3 -m pip)

# hash_dir DIR: a content hash of a build context (file names, modes and
# bytes; wheels by their unpacked contents, since zip timestamps vary).
hash_dir() {
  python3 - "$1" <<'EOF'
import hashlib, os, stat, sys, zipfile
root = sys.argv[1]
h = hashlib.sha256()
for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(filenames):
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, root)
        h.update(f"{rel}\0{stat.S_IMODE(os.stat(path).st_mode):o}\0".encode())
        if name.endswith(".whl"):
            with zipfile.ZipFile(path) as z:
                for info in sorted(z.infolist(), key=lambda i: i.filename):
                    h.update(info.filename.encode() + b"\0" + z.read(info))
        else:
            with open(path, "rb") as f:
                h.update(f.read())
print(h.hexdigest())
EOF
}

# build NAME CONTEXT [BASE]: buildah bud CONTEXT into docker.io/kfn/NAME:TAG and
# an archive in the cache, unless the inputs are unchanged.
build() {
  local name=$1 ctx=$2 base=${3:-} ref="docker.io/kfn/$1:$(tag_of "$1")" stem
  stem=$(stem_of "$1")
  local archive="$IMAGE_CACHE/$stem.tar" hash
  hash=$( { hash_dir "$ctx"; if [ -n "$base" ]; then cat "$IMAGE_CACHE/base.hash"; fi; } | sha256sum | cut -c1-32)
  if [ -f "$archive" ] && [ "$(cat "$IMAGE_CACHE/$stem.hash" 2>/dev/null)" = "$hash" ]; then
    log "image $ref is up to date"
    return 0
  fi
  log "building image $ref"
  local t0=$SECONDS args=(bud --isolation chroot --pull-never --layers --format docker -t "$ref" -f "$ctx/Dockerfile")
  [ -n "$base" ] && args+=(--build-arg "BASE=$base")
  "${BUILDAH[@]}" "${args[@]}" "$ctx" > "$IMAGE_CACHE/$name.build.log" 2>&1 \
    || { tail -n 30 "$IMAGE_CACHE/$name.build.log" >&2; die "building $ref failed (log: $IMAGE_CACHE/$name.build.log)"; }
  rm -f "$archive.tmp"
  "${BUILDAH[@]}" push -q "$ref" "docker-archive:$archive.tmp:$ref" >/dev/null
  mv "$archive.tmp" "$archive"
  echo "$hash" > "$IMAGE_CACHE/$stem.hash"
  log "built $ref ($(du -m "$archive" | cut -f1) MB) in $((SECONDS - t0)) s"
}

# digest_ref NAME REF: also name the image repo@sha256:<manifest digest>, as a pull from a registry
# does; the kubelet then reports that as a pod's imageID, and pods may name it to pin an image
# (kfn's published versions of image functions do).
digest_ref() {
  local digest
  digest=$(ctr -a "$CONTAINERD_SOCK" -n k8s.io images ls | awk -v r="$2" '$1 == r {print $3}')
  [ -z "$digest" ] || ctr -a "$CONTAINERD_SOCK" -n k8s.io images tag --force "$2" "docker.io/kfn/$1@$digest" >/dev/null
}

# load NAME: import the archive into the node's containerd if it is running
# and does not have this build yet.
load() {
  local name=$1 stem ref
  stem=$(stem_of "$1"); ref="docker.io/kfn/$1:$(tag_of "$1")"
  local archive="$IMAGE_CACHE/$stem.tar" mark="$RUN_DIR/imported/$stem"
  [ -f "$archive" ] || return 0
  if ! [ -S "$CONTAINERD_SOCK" ] || ! ctr -a "$CONTAINERD_SOCK" version >/dev/null 2>&1; then
    [ -n "${said_not_running:-}" ] || log "the test bed's containerd is not running: make cluster-up loads the images"
    said_not_running=1
    return 0
  fi
  if [ "$(cat "$mark" 2>/dev/null)" = "$(cat "$IMAGE_CACHE/$stem.hash")" ] \
    && [[ $'\n'$(ctr -a "$CONTAINERD_SOCK" -n k8s.io images ls -q)$'\n' == *$'\n'"$ref"$'\n'* ]]; then
    digest_ref "$1" "$ref"
    return 0
  fi
  local t0=$SECONDS
  ctr -a "$CONTAINERD_SOCK" -n k8s.io images import "$archive" >/dev/null
  digest_ref "$1" "$ref"
  mkdir -p "$RUN_DIR/imported"
  cp "$IMAGE_CACHE/$stem.hash" "$mark"
  log "loaded $ref into containerd ($((SECONDS - t0)) s)"
}

# context NAME SRC-DIR: a fresh copy of SRC-DIR to build from.
context() {
  local ctx="$IMAGE_CACHE/ctx/$(stem_of "$1")"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -a "$2/." "$ctx/"
  echo "$ctx"
}

# ------------------------------------------------------------ node images
ctx=$(context pause "$repo/images/pause")
cp "$(readlink -f "$TOOLS_BIN/pause")" "$ctx/pause"
build pause "$ctx"
ctx=$(context coredns "$here/images/coredns")
cp "$TOOLS_BIN/coredns-$COREDNS_VERSION" "$ctx/coredns"
build coredns "$ctx"

if [ "$NODE_ONLY" = 0 ]; then
  # ---------------------------------------------------------- base
  rootfs_tar="$IMAGE_CACHE/base-bookworm-rootfs.tar"
  if [ ! -f "$rootfs_tar" ]; then
    mirror=$(awk '/^URIs:/ {print $2; exit} /^deb / {print $2; exit}' \
      /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n1)
    [ -n "$mirror" ] || die "no Debian mirror found in the apt sources for debootstrap"
    log "debootstrap bookworm (minbase + python3) from the machine's apt mirror; about a minute"
    t0=$SECONDS
    root="$CACHE/build/base-rootfs"
    rm -rf "$root"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" \
      > "$IMAGE_CACHE/debootstrap.log" 2>&1 \
      || { tail -n 30 "$IMAGE_CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $IMAGE_CACHE/debootstrap.log)"; }
    # Trim what an image never uses (docs, man pages, apt lists and caches).
    rm -rf "$root"/usr/share/{doc,man,info,locale}/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
      "$root"/var/log/*
    tar -C "$root" --numeric-owner -cf "$rootfs_tar.tmp" .
    mv "$rootfs_tar.tmp" "$rootfs_tar"
    rm -rf "$root"
    log "base root filesystem ready ($(du -m "$rootfs_tar" | cut -f1) MB) in $((SECONDS - t0)) s"
  fi
  base_hash=$(sha256sum "$rootfs_tar" | cut -c1-32)
  if [ "$(cat "$IMAGE_CACHE/base.hash" 2>/dev/null)" != "$base_hash" ] \
    || ! "${BUILDAH[@]}" inspect --type image localhost/kfn/base:dev >/dev/null 2>&1; then
    log "committing localhost/kfn/base:dev"
    c=$("${BUILDAH[@]}" from scratch)
    m=$("${BUILDAH[@]}" mount "$c")
    tar -C "$m" --numeric-owner -xf "$rootfs_tar"
    "${BUILDAH[@]}" umount "$c" >/dev/null
    "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env LANG=C.UTF-8 --cmd python3 "$c"
    "${BUILDAH[@]}" commit -q --rm "$c" localhost/kfn/base:dev >/dev/null
    echo "$base_hash" > "$IMAGE_CACHE/base.hash"
  fi
  BASE=localhost/kfn/base:dev

  # ---------------------------------------------------------- event source brokers, in the background
  # Each in a subshell of its own (build log per image, progress lines as the others); waited for at the end.
  broker_pids=()
  ( ctx=$(context rabbitmq "$here/images/rabbitmq")
    build rabbitmq "$ctx" "$BASE" ) &
  broker_pids+=($!)
  ( ctx=$(context kafka "$here/images/kafka")
    # The broker's jars: pom.xml resolved once per its hash into the cache (Maven Central via Debian's maven).
    jars="$IMAGE_CACHE/kafka-jars/$(sha256sum "$here/images/kafka/pom.xml" | cut -c1-16)"
    if [ ! -d "$jars" ]; then
      log "resolving Kafka's jars from Maven Central (testbed/images/kafka/pom.xml)"
      t0=$SECONDS
      rm -rf "$jars.tmp"
      mvn -B -q -f "$here/images/kafka/pom.xml" -Dmaven.repo.local="$CACHE/m2" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$jars.tmp" > "$IMAGE_CACHE/kafka.mvn.log" 2>&1 \
        || { tail -n 30 "$IMAGE_CACHE/kafka.mvn.log" >&2; die "resolving Kafka's jars failed (log: $IMAGE_CACHE/kafka.mvn.log)"; }
      mv "$jars.tmp" "$jars"
      log "Kafka's jars ready ($(ls "$jars" | wc -l) jars, $(du -sm "$jars" | cut -f1) MB) in $((SECONDS - t0)) s"
    fi
    rm -f "$ctx/pom.xml"
    cp -a "$jars" "$ctx/jars"
    build kafka "$ctx" "$BASE" ) &
  broker_pids+=($!)
  ( ctx=$(context moto "$here/images/moto")
    "${PIP[@]}" wheel -q --disable-pip-version-check --wheel-dir "$ctx/wheels" -r "$ctx/requirements.txt" \
      > "$IMAGE_CACHE/moto.wheels.log" 2>&1 \
      || { tail -n 30 "$IMAGE_CACHE/moto.wheels.log" >&2; die "pip wheel for moto failed"; }
    build moto "$ctx" "$BASE" ) &
  broker_pids+=($!)

  # ---------------------------------------------------------- kfn
  ctx=$(context kfn "$repo/images/kfn")
  # Dependencies: a wheelhouse per pyproject.toml, made once; kfn itself: a
  # fresh wheel of the working tree every time (seconds).
  wheelhouse="$IMAGE_CACHE/wheelhouse/kfn-$(sha256sum "$repo/pyproject.toml" | cut -c1-16)"
  if [ ! -d "$wheelhouse" ]; then
    log "collecting wheels of kfn's dependencies (once per pyproject.toml)"
    rm -rf "$wheelhouse.tmp"
    "${PIP[@]}" wheel -q --disable-pip-version-check --wheel-dir "$wheelhouse.tmp" "$repo" \
      > "$IMAGE_CACHE/kfn.wheels.log" 2>&1 \
      || { tail -n 30 "$IMAGE_CACHE/kfn.wheels.log" >&2; die "pip wheel of kfn's dependencies failed"; }
    rm -f "$wheelhouse.tmp"/kfn-*.whl
    mv "$wheelhouse.tmp" "$wheelhouse"
  fi
  mkdir -p "$ctx/wheels/deps" "$ctx/wheels/kfn"
  cp "$wheelhouse"/*.whl "$ctx/wheels/deps/"
  log "building the kfn wheel from the working tree"
  # A build venv of our own (setuptools, wheel) saves pip's isolated build
  # environment: this wheel is rebuilt on every `make images`.
  buildvenv="$CACHE/build/wheel-venv"
  if ! "$buildvenv/bin/python" -c "import setuptools, wheel" 2>/dev/null; then
    python3 -m venv "$buildvenv"
    "$buildvenv/bin/pip" install -q --disable-pip-version-check "setuptools>=68" wheel \
      > "$IMAGE_CACHE/wheel-venv.log" 2>&1 || die "could not make $buildvenv (log: $IMAGE_CACHE/wheel-venv.log)"
  fi
  "$buildvenv/bin/pip" wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
    --wheel-dir "$ctx/wheels/kfn" "$repo" > "$IMAGE_CACHE/kfn.wheel.log" 2>&1 \
    || { tail -n 30 "$IMAGE_CACHE/kfn.wheel.log" >&2; die "pip wheel of kfn failed"; }
  build kfn "$ctx" "$BASE"
  kfn_wheels="$ctx/wheels"  # the arm64 twin installs the same wheels (testbed/images-arm64.sh)

  # ---------------------------------------------------------- python3.11 (agent engineer's contents)
  src="$repo/images/python3.11"
  if [ ! -f "$src/Dockerfile" ]; then
    log "images/python3.11/Dockerfile not there yet: building the placeholder runtime image"
    src="$here/images/python3.11-placeholder"
  fi
  ctx=$(context python3.11 "$src")
  if [ -f "$ctx/requirements.txt" ]; then
    "${PIP[@]}" wheel -q --disable-pip-version-check --wheel-dir "$ctx/wheels" -r "$ctx/requirements.txt" \
      > "$IMAGE_CACHE/python3.11.wheels.log" 2>&1 \
      || { tail -n 30 "$IMAGE_CACHE/python3.11.wheels.log" >&2; die "pip wheel for python3.11 failed"; }
  fi
  build python3.11 "$ctx" "$BASE"
  # The arm64 twins of kfn and python3.11 and their amd64 + arm64 image indexes (testbed/images-arm64.sh), in the
  # background. Not fatal: the amd64 node never runs them; tests/e2e/test_architecture.py fails without them.
  # KFN_ARM64_IMAGES=0 leaves them out of a quick edit-test loop (each kfn change costs its twin about a minute).
  if [ "${KFN_ARM64_IMAGES:-1}" = 0 ]; then
    log "arm64 images skipped (KFN_ARM64_IMAGES=0): tests/e2e/test_architecture.py's image tests need them"
    arm64_pid=
  else
    bash "$here/images-arm64.sh" "$TAG" "${PIP[0]}" "$src" "$kfn_wheels" &
    arm64_pid=$!
  fi

  # ---------------------------------------------------------- redis (test broker for Redis stream destinations)
  ctx=$(context redis "$here/images/redis")
  build redis "$ctx" "$BASE"

  # ---------------------------------------------------------- nats (the async queue)
  wait "$nats_pid" || { cat "$nats_log" >&2; die "building nats-server failed (log: $nats_log)"; }
  grep -h 'built ' "$nats_log" || true
  ctx=$(context nats "$repo/images/nats")
  cp "$(cat "$nats_log.out")" "$ctx/nats-server"
  build nats "$ctx"

  for pid in "${broker_pids[@]}"; do wait "$pid" || die "building an event source broker image failed (above)"; done
  [ -z "$arm64_pid" ] || wait "$arm64_pid" || log "WARNING: the arm64 images and the multi-architecture indexes were not built (above)"
fi

for name in pause coredns kfn python3.11 redis nats kafka rabbitmq moto; do load "$name"; done
