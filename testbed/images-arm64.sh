#!/usr/bin/env bash
# The arm64 halves of kfn's images and their multi-architecture indexes (docs/architectures.md), built on an
# amd64 machine without running any arm64 code. Called by testbed/images.sh in the background once the amd64
# kfn and python3.11 images are built:
#
#   images-arm64.sh TAG PYTHON RUNTIME_SRC_DIR KFN_WHEELS_DIR
#
#   PYTHON: one with pip; RUNTIME_SRC_DIR: images/python3.11 (requirements.txt, bootstrap.py); KFN_WHEELS_DIR: the
#   kfn image's build context wheels (deps/: kfn's dependencies, kfn/: the kfn wheel), as images.sh made them.
#
#   1. arm64 .debs of the base's package set: `debootstrap --download-only --arch=arm64` (same suite, variant
#      and --include as the amd64 base), cached per amd64 base;
#   2. the arm64 base root filesystem: testbed/arm64_rootfs.py swaps every amd64 package of the amd64 base for
#      its arm64 build (cached as base-bookworm-rootfs-arm64.tar, per amd64 base and script);
#   3. each arm64 image: that root filesystem, the image's venv made by hand as `python3 -m venv` lays it out
#      (pyvenv.cfg + links to /usr/bin/python3; the arm64 Python cannot run here), the same Python packages as
#      the amd64 image installed from aarch64 wheels (`pip install --platform manylinux…_aarch64
#      --only-binary=:all:`), and the amd64 image's config (env, entrypoint, cmd, workdir), so both halves start
#      the same way:
#        python3.11  /var/lang: images/python3.11/requirements.txt; /var/runtime/bootstrap.py;
#        kfn         /opt/kfn: the same versions of kfn's dependencies, the kfn wheel, its console scripts;
#   4. per image an OCI image index with both manifests (linux/amd64 = the amd64 image, linux/arm64), written as
#      an OCI archive $IMAGE_CACHE/NAME-multiarch[-TAG].tar named docker.io/kfn/NAME:TAG. That archive is what a
#      registry push publishes (`skopeo copy --all oci-archive:… docker://…`). The amd64-only node keeps running
#      the amd64 images: the indexes are not loaded into its containerd.
#
# Only on an x86_64 machine (the assembly swaps amd64 packages for arm64 ones); elsewhere it says so and stops.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
TAG=$1 PY=$2 RUNTIME_SRC=$3 KFN_WHEELS=$4
[ "$(uname -m)" = x86_64 ] || { log "arm64 images: only cross-built from an x86_64 machine; skipped on $(uname -m)"; exit 0; }
BUILDAH=(buildah --root "$CACHE/buildah/root" --runroot "$CACHE/buildah/run" --storage-driver overlay)
# Wheels an arm64 Debian bookworm (glibc 2.36) can load.
AARCH64=(--platform manylinux2014_aarch64 --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311)
for v in 28 31 34 35 36; do AARCH64+=(--platform "manylinux_2_${v}_aarch64"); done
base_hash=$(cat "$IMAGE_CACHE/base.hash")
c=
trap '[ -z "$c" ] || "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1' EXIT  # no working container left by a failure

# ------------------------------------------------------------------ 1. arm64 .debs of the base's package set
debs="$IMAGE_CACHE/arm64-debs-$base_hash"
if [ ! -d "$debs" ]; then
  mirror=$(awk '/^URIs:/ {print $2; exit} /^deb / {print $2; exit}' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n1)
  log "downloading the arm64 .debs of the base (debootstrap --download-only --arch=arm64); about 30 s"
  rm -rf "$CACHE/build/arm64-debs"
  debootstrap --download-only --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$CACHE/build/arm64-debs" "$mirror" > "$IMAGE_CACHE/debootstrap-arm64.log" 2>&1 \
    || { tail -n 30 "$IMAGE_CACHE/debootstrap-arm64.log" >&2; die "debootstrap --download-only --arch=arm64 failed"; }
  mv "$CACHE/build/arm64-debs/var/cache/apt/archives" "$debs.tmp" && mv "$debs.tmp" "$debs"
  rm -rf "$CACHE/build/arm64-debs"
fi

# ------------------------------------------------------------------ 2. the arm64 base root filesystem
rootfs="$IMAGE_CACHE/base-bookworm-rootfs-arm64.tar"
rootfs_key=$( { echo "$base_hash"; cat "$here/arm64_rootfs.py"; } | sha256sum | cut -c1-32)
if [ ! -f "$rootfs" ] || [ "$(cat "$rootfs.hash" 2>/dev/null)" != "$rootfs_key" ]; then
  log "assembling the arm64 base root filesystem from the amd64 base and the arm64 .debs"
  tree="$CACHE/build/base-rootfs-arm64"
  rm -rf "$tree" "$tree.control"
  python3 "$here/arm64_rootfs.py" "$IMAGE_CACHE/base-bookworm-rootfs.tar" "$debs" "$tree" \
    > "$IMAGE_CACHE/arm64-rootfs.log" 2>&1 \
    || { tail -n 30 "$IMAGE_CACHE/arm64-rootfs.log" >&2; die "assembling the arm64 root filesystem failed"; }
  tar -C "$tree" --numeric-owner -cf "$rootfs.tmp" . && mv "$rootfs.tmp" "$rootfs"
  rm -rf "$tree"
  echo "$rootfs_key" > "$rootfs.hash"
fi


# amd64_ref NAME: the amd64 image in buildah's storage (imported from its archive when a prune dropped it).
amd64_ref() {
  local ref="docker.io/kfn/$1:$TAG" stem=$1
  [ "$TAG" = dev ] || stem="$1-$TAG"
  if ! "${BUILDAH[@]}" inspect --type image "$ref" >/dev/null 2>&1; then
    "${BUILDAH[@]}" pull -q "docker-archive:$IMAGE_CACHE/$stem.tar" >/dev/null \
      || die "$ref is neither in buildah's storage nor in $IMAGE_CACHE/$stem.tar"
  fi
  echo "$ref"
}

# arm64_root: a new arm64 working container $c with the arm64 base unpacked at $m.
arm64_root() {
  c=$("${BUILDAH[@]}" from --arch arm64 --os linux scratch)
  m=$("${BUILDAH[@]}" mount "$c")
  tar -C "$m" --numeric-owner -xf "$rootfs"
}

# make_venv DIR: the venv `python3 -m venv DIR` makes, in $m (same layout, same pyvenv.cfg keys).
make_venv() {
  local version
  version=$(sed -n '/^Package: python3.11-minimal$/,/^$/ s/^Version: \([0-9.]*\).*/\1/p' "$m/var/lib/dpkg/status")
  [ -n "$version" ] || die "no python3.11-minimal in the arm64 base's dpkg status"
  mkdir -p "$m$1/bin" "$m$1/include" "$m$1/lib/python3.11/site-packages"
  ln -s lib "$m$1/lib64"
  ln -s /usr/bin/python3 "$m$1/bin/python"
  ln -s python "$m$1/bin/python3"
  ln -s python "$m$1/bin/python3.11"
  printf 'home = /usr/bin\ninclude-system-site-packages = false\nversion = %s\nexecutable = /usr/bin/python3.11\ncommand = /usr/bin/python3 -m venv %s\n' \
    "$version" "$1" > "$m$1/pyvenv.cfg"
}

# install_wheels DIR LOG WHEEL...: the wheels into the venv DIR of $m, console scripts as pip writes them in a venv.
install_wheels() {
  local venv=$1 log_file=$2; shift 2
  local site="$m$venv/lib/python3.11/site-packages"
  "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --target "$site" \
    "${AARCH64[@]}" "$@" >> "$log_file" 2>&1 || { tail -n 30 "$log_file" >&2; die "installing aarch64 wheels failed"; }
  rm -rf "$site/bin"  # pip --target's scripts: their #! names this machine's Python; written below instead
  python3 - "$site" "$m$venv/bin" "$venv/bin/python3" <<'PY'
import configparser, pathlib, sys
site, bin_dir, python = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
for entry_points in site.glob("*.dist-info/entry_points.txt"):
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # script names keep their case
    parser.read(entry_points)
    for name, target in (parser["console_scripts"].items() if parser.has_section("console_scripts") else []):
        module, _, attr = target.strip().partition(":")
        script = bin_dir / name
        script.write_text(f"#!{python}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom {module} import {attr.split('.')[0]}\n"
                          f"if __name__ == \"__main__\":\n    sys.argv[0] = re.sub(r\"(-script\\.pyw|\\.exe)?$\", \"\", sys.argv[0])\n"
                          f"    sys.exit({attr}())\n")
        script.chmod(0o755)
PY
}

# commit_like AMD64_REF ARM64_REF: $c gets the amd64 image's config and is committed as ARM64_REF.
commit_like() {
  local args=()
  while IFS= read -r a; do args+=("$a"); done < <("${BUILDAH[@]}" inspect --type image "$1" | python3 -c '
import json, sys
config = json.load(sys.stdin)["OCIv1"]["config"]
for e in config.get("Env") or []:
    print("--env"); print(e)
print("--entrypoint"); print(json.dumps(config.get("Entrypoint") or []))
print("--cmd"); print(json.dumps(config.get("Cmd") or []))
print("--workingdir"); print(config.get("WorkingDir") or "/")')
  [ ${#args[@]} -gt 0 ] || die "could not read the config of $1"
  "${BUILDAH[@]}" umount "$c" >/dev/null
  "${BUILDAH[@]}" config "${args[@]}" "$c"
  "${BUILDAH[@]}" commit -q --rm "$c" "$2" >/dev/null
  c=
}

# index NAME AMD64_REF ARM64_REF ARCHIVE: the OCI image index of both, as an OCI archive named docker.io/kfn/NAME:TAG.
index() {
  local list="localhost/kfn/$1-index:$TAG"
  "${BUILDAH[@]}" manifest rm "$list" >/dev/null 2>&1 || true  # a list of an earlier build
  "${BUILDAH[@]}" manifest create "$list" >/dev/null
  "${BUILDAH[@]}" manifest add --os linux --arch amd64 "$list" "containers-storage:$2" >/dev/null
  "${BUILDAH[@]}" manifest add --os linux --arch arm64 "$list" "containers-storage:$3" >/dev/null
  rm -f "$4.tmp"
  "${BUILDAH[@]}" manifest push -q --all --format oci "$list" "oci-archive:$4.tmp:docker.io/kfn/$1:$TAG" \
    > "$4.push.log" 2>&1 || { tail -n 30 "$4.push.log" >&2; die "writing the image index of $1 failed"; }
  mv "$4.tmp" "$4"
}

# image NAME INPUTS...: build NAME's arm64 half (build_NAME) and index unless the hash of the inputs (these files,
# the amd64 image's ID, the arm64 base, this script) is unchanged.
image() {
  local name=$1 stem="$1-multiarch" amd64 hash t0=$SECONDS; shift
  [ "$TAG" = dev ] || stem="$stem-$TAG"
  local archive="$IMAGE_CACHE/$stem.tar"
  amd64=$(amd64_ref "$name")
  # contents only: the same files by another path are the same inputs
  hash=$( { echo "$base_hash"; cat "$here/arm64_rootfs.py" "$here/images-arm64.sh" "$@"
            "${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$amd64"; } | sha256sum | cut -c1-32)
  if [ -f "$archive" ] && [ "$(cat "$IMAGE_CACHE/$stem.hash" 2>/dev/null)" = "$hash" ]; then
    log "image docker.io/kfn/$name:$TAG for linux/amd64 + linux/arm64 is up to date"
    return 0
  fi
  "build_$name" "localhost/kfn/$name-arm64:$TAG" "$amd64"
  index "$name" "$amd64" "localhost/kfn/$name-arm64:$TAG" "$archive"
  echo "$hash" > "$IMAGE_CACHE/$stem.hash"
  log "built docker.io/kfn/$name:$TAG for linux/amd64 + linux/arm64 ($(du -m "$archive" | cut -f1) MB OCI archive) in $((SECONDS - t0)) s"
}

build_python3.11() {
  local wheels="$CACHE/build/python3.11-arm64-wheels-$TAG" log_file="$IMAGE_CACHE/python3.11-arm64.wheels.log"
  rm -rf "$wheels"
  "$PY" -m pip download -q --disable-pip-version-check --dest "$wheels" "${AARCH64[@]}" \
    -r "$RUNTIME_SRC/requirements.txt" > "$log_file" 2>&1 \
    || { tail -n 30 "$log_file" >&2; die "pip download of the runtime's aarch64 wheels failed"; }
  arm64_root
  make_venv /var/lang
  install_wheels /var/lang "$log_file" "$wheels"/*.whl
  mkdir -p "$m/var/task" "$m/var/runtime" "$m/opt"
  install -m 0644 "$RUNTIME_SRC/bootstrap.py" "$m/var/runtime/bootstrap.py"
  commit_like "$2" "$1"
  rm -rf "$wheels"
}

build_kfn() {
  local wheels="$CACHE/build/kfn-arm64-wheels-$TAG" log_file="$IMAGE_CACHE/kfn-arm64.wheels.log" whl pins=()
  rm -rf "$wheels"; mkdir -p "$wheels"
  # The amd64 image's exact versions: pure wheels as they are, the others' aarch64 builds from PyPI.
  for whl in "$KFN_WHEELS"/deps/*.whl; do
    case "$whl" in
      *-none-any.whl) cp "$whl" "$wheels/" ;;
      *) whl=$(basename "$whl"); pins+=("$(echo "$whl" | cut -d- -f1)==$(echo "$whl" | cut -d- -f2)") ;;
    esac
  done
  : > "$log_file"
  [ ${#pins[@]} -eq 0 ] || "$PY" -m pip download -q --disable-pip-version-check --no-deps --dest "$wheels" \
    "${AARCH64[@]}" "${pins[@]}" >> "$log_file" 2>&1 \
    || { tail -n 30 "$log_file" >&2; die "pip download of kfn's aarch64 wheels failed"; }
  arm64_root
  make_venv /opt/kfn
  install_wheels /opt/kfn "$log_file" "$wheels"/*.whl "$KFN_WHEELS"/kfn/*.whl
  commit_like "$2" "$1"
  rm -rf "$wheels"
}

# ------------------------------------------------------------------ 3 + 4. each image and its index
[ -f "$RUNTIME_SRC/bootstrap.py" ] || die "$RUNTIME_SRC has no bootstrap.py (the placeholder runtime has no arm64 twin)"
image python3.11 "$RUNTIME_SRC/requirements.txt" "$RUNTIME_SRC/bootstrap.py"
image kfn  # its wheels are the amd64 image's (whose ID is in the hash; the wheel files' zip dates vary)
