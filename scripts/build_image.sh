#!/usr/bin/env bash
# Build the slimspeech server image (Dockerfile) with docker or buildah, then print its size.
#
#   bash scripts/build_image.sh                              # the cpu target on python:3.11-slim-bookworm
#   bash scripts/build_image.sh --target cuda                # slimspeech:cuda (PyPI's CUDA 13 torch + vLLM)
#   bash scripts/build_image.sh --debootstrap-base           # no upstream registry: the base is Debian bookworm
#                                                            # + its python3, made here with debootstrap
#   bash scripts/build_image.sh --torch-wheels /opt/wheels   # torch X+cpu from a wheel dir, not the PyTorch index
#
# Options:
#   --target cpu|cuda      the Dockerfile target (default cpu)
#   --tag NAME             the image name (default slimspeech:latest, slimspeech:cuda for --target cuda)
#   --base IMAGE           the BASE_IMAGE build arg (default: the Dockerfile's, python:3.11-slim-bookworm)
#   --debootstrap-base     use localhost/slimspeech-base:bookworm, made first when missing: `debootstrap
#                          --variant=minbase bookworm` + python3, python3-venv, ca-certificates (needs root);
#                          the root file system is cached as a tarball under $SLIMSPEECH_IMAGE_CACHE
#   --torch-wheels DIR     find torch's CPU wheel in DIR, bind-mounted into the build (never into a layer),
#                          the rest from PyPI. Default: $SLIMSPEECH_TORCH_WHEELS, else the first dir in
#                          $PIP_FIND_LINKS that holds torch-X+cpu for the cpu target; none: the PyPI CPU index
#   --no-cache             build every layer anew (default: reuse the builder's layer cache)
#   --builder docker|buildah   default: docker when its daemon answers, else buildah
#   -- ARGS                passed to the builder as they are (e.g. --build-arg TORCH_INDEX_URL=URL)
# Environment: SLIMSPEECH_IMAGE_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/slimspeech/image),
# DEBIAN_MIRROR (default http://deb.debian.org/debian), BUILDAH_ISOLATION (default here: chroot).
# Behind a TLS-intercepting proxy, pip's CA bundle (PIP_CERT or `pip config get global.cert`) is
# bind-mounted into buildah's build steps over the base's /etc/ssl/certs/ca-certificates.crt, which
# Debian's pip reads (the debootstrapped base); it never enters a layer.
#
# The last line: "image NAME: SIZE MB (base + dependencies B MB, package P MB), built in N s": a code
# change rebuilds and re-ships the P MB (our package's layer and the few small ones above it).
set -euo pipefail
cd "$(dirname "$0")/.."

target=cpu tag="" base="" debootstrap_base=0 wheels="${SLIMSPEECH_TORCH_WHEELS:-}" no_cache=0 builder=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --base) base=$2; shift 2 ;;
    --debootstrap-base) debootstrap_base=1; shift ;;
    --torch-wheels) wheels=$2; shift 2 ;;
    --no-cache) no_cache=1; shift ;;
    --builder) builder=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$target" in cpu|cuda) ;; *) echo "error: --target cpu|cuda, not $target" >&2; exit 2 ;; esac
[ -n "$tag" ] || { [ "$target" = cuda ] && tag=slimspeech:cuda || tag=slimspeech:latest; }
TORCH=$(sed -n 's/^ARG TORCH_VERSION=//p' Dockerfile)
CACHE=${SLIMSPEECH_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/slimspeech/image}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_TAG=localhost/slimspeech-base:bookworm

# ---- the builder ----------------------------------------------------------------------------------
if [ -z "$builder" ]; then
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then builder=docker
  elif command -v buildah >/dev/null; then builder=buildah
  else echo "error: neither a docker daemon nor buildah here (apt-get install buildah podman runc)" >&2; exit 1
  fi
fi
image_exists() {
  if [ "$builder" = docker ]; then docker image inspect "$1" >/dev/null 2>&1
  else buildah inspect --type image "$1" >/dev/null 2>&1; fi
}
tmp=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  # a debootstrap that failed half-way may leave /proc or /sys mounted in its root: never delete through them
  awk -v t="$tmp/" 'index($2, t) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r umount -l 2>/dev/null || true
  rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT

# ---- the base: Debian bookworm + python3, debootstrapped here (no registry needed) ----------------
if [ "$debootstrap_base" = 1 ]; then
  base=$BASE_TAG
  if ! image_exists "$base"; then
    tarball=$CACHE/debian-bookworm-minbase-python3.tar
    if [ ! -s "$tarball" ]; then
      command -v debootstrap >/dev/null \
        || { echo "error: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }
      [ "$(id -u)" -eq 0 ] || { echo "error: debootstrap needs root" >&2; exit 1; }
      mkdir -p "$CACHE"
      rootfs=$tmp/rootfs
      echo "base: debootstrap bookworm (minbase + python3) from $MIRROR"
      t0=$SECONDS
      debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$MIRROR" > "$tmp/debootstrap.log" 2>&1 \
        || { tail -20 "$tmp/debootstrap.log" >&2; echo "error: debootstrap failed" >&2; exit 1; }
      # what a runtime mounts itself, and what an image does without (like the official slim images)
      rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
             "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
             "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname "$rootfs"/etc/machine-id
      tar -C "$rootfs" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
          -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
      rm -rf "$rootfs"
      echo "base: cached $tarball ($(du -m "$tarball" | cut -f1) MB) in $((SECONDS - t0)) s"
    fi
    changes=(--change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]')
    if [ "$builder" = docker ]; then docker import "${changes[@]}" "$tarball" "$base" >/dev/null
    else
      command -v podman >/dev/null || { echo "error: podman missing (apt-get install podman)" >&2; exit 1; }
      podman import "${changes[@]}" "$tarball" "$base" >/dev/null
    fi
    echo "base: imported $base"
  fi
fi

# ---- the build ------------------------------------------------------------------------------------
args=(--target "$target" -t "$tag" -f Dockerfile)
[ -n "$base" ] && args+=(--build-arg "BASE_IMAGE=$base")
if [ -z "$wheels" ] && [ "$target" = cpu ]; then
  for d in ${PIP_FIND_LINKS:-} $(python3 -m pip config get global.find-links 2>/dev/null || true); do
    if compgen -G "$d/torch-$TORCH+cpu-*.whl" >/dev/null; then wheels=$d; break; fi
  done
fi
if [ -n "$wheels" ] && [ "$target" = cpu ]; then
  wheels=$(cd "$wheels" && pwd)
  compgen -G "$wheels/torch-$TORCH+cpu-*.whl" >/dev/null \
    || { echo "error: no torch-$TORCH+cpu wheel in $wheels" >&2; exit 1; }
  echo "torch: $(basename "$(compgen -G "$wheels/torch-$TORCH+cpu-*.whl" | head -1)") from $wheels, the rest from PyPI"
  args+=(--build-arg TORCH_INDEX_URL=)
  if [ "$builder" = buildah ]; then
    # onto /mnt, which Debian-based images have: buildah leaves no empty mount point in a layer
    args+=(--volume "$wheels:/mnt:ro" --build-arg TORCH_FIND_LINKS=/mnt)
  else  # docker has no build-time volumes: serve the dir to the build over loopback, on a fixed port
    # when it is free (the URL is a build arg: a new one would invalidate the cached torch layer)
    port=$(python3 -c '
import socket
s = socket.socket()
try:
    s.bind(("127.0.0.1", 38765))
except OSError:
    s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
    python3 -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" >/dev/null 2>&1 &
    server_pid=$!
    args+=(--network host --build-arg "TORCH_FIND_LINKS=http://127.0.0.1:$port/")
  fi
fi
if [ "$builder" = buildah ]; then
  # HEALTHCHECK lives only in the docker image format; chroot isolation works where runc cannot run
  # inside this machine's sandbox and costs nothing elsewhere
  args+=(--format docker --isolation "${BUILDAH_ISOLATION:-chroot}")
  # --layers: one layer per instruction (without it buildah squashes each stage into one layer)
  # --force-rm: no build container is left behind when a step fails
  args+=(--layers --force-rm)
  [ "$no_cache" = 1 ] && args+=(--no-cache)
  cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
  if [ -n "$cert" ] && [ -f "$cert" ]; then
    # over the base's own bundle, which Debian's pip and OpenSSL read (nothing is left in a layer)
    args+=(--volume "$(readlink -f "$cert"):/etc/ssl/certs/ca-certificates.crt:ro")
  fi
  build=(buildah bud)
else
  [ "$no_cache" = 1 ] && args+=(--no-cache)
  build=(docker build)
fi
echo "building $tag (target $target) with $builder${base:+ on $base}"
t0=$SECONDS
"${build[@]}" "${args[@]}" "${extra[@]}" .
secs=$((SECONDS - t0))

# ---- the size -------------------------------------------------------------------------------------
if [ "$builder" = docker ]; then
  size=$(docker image inspect --format '{{.Size}}' "$tag")
  layers=$(docker history --no-trunc --human=false --format '{{.Size}}	{{.CreatedBy}}' "$tag")
elif command -v podman >/dev/null; then
  size=$(podman image inspect --format '{{.Size}}' "$tag")
  # (podman 4's --format prints sizes rounded whatever --human says: its JSON has the bytes)
  layers=$(podman history --format json "$tag" \
           | python3 -c 'import json, sys; [print(h["size"], h["CreatedBy"], sep="\t") for h in json.load(sys.stdin)]')
else  # buildah alone: its rounded size
  echo "image $tag: $(buildah images --format '{{.Size}}' "$tag"), built in $secs s"
  exit 0
fi
mb() { awk -v b="$1" 'BEGIN { printf "%d", b / 1e6 + 0.5 }'; }
# the package layer (docker: "COPY /opt/pkgroot/ /", buildah: "COPY dir:ID in /"): what a code change
# rebuilds and re-ships along with the few small layers above it; everything below it stays cached
split=$(printf '%s\n' "$layers" | awk -F'\t' '
  !found && $2 ~ /COPY (\/opt\/pkgroot\/? \/|dir:[0-9a-f]+ in \/ *$)/ { found = 1; pkg = $1; next }
  { if (found) below += $1; else above += $1 }
  END { if (found) printf "%.0f %.0f %.0f", pkg, above, below }')
detail=""
if [ -n "$split" ]; then
  read -r pkg above below <<< "$split"
  detail=" (base + dependencies $(mb "$below") MB, package $(mb $((pkg + above))) MB)"
fi
echo "image $tag: $(mb "$size") MB$detail, built in $secs s"
