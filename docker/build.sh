#!/usr/bin/env bash
# Build the service image, also on a machine with no image registry (idempotent).
#
# - The base (debian:bookworm-slim by default) is used when present, else pulled, else
#   (no registry) made with debootstrap from the Debian mirror apt already uses.
# - pip inside the build trusts this machine's CA bundle (passed as a BuildKit secret, never
#   stored in a layer), so builds behind a TLS-intercepting proxy work.
#
# Environment (all optional):
#   IMAGE=diffres-service:cpu      tag to build
#   VARIANT=cpu|gpu                cpu: ./Dockerfile, gpu: docker/Dockerfile.gpu
#   BASE_IMAGE=...                 base image (build ARG BASE_IMAGE)
#   PIP_CA_BUNDLE=/path/ca.crt     CA bundle for pip (default: $PIP_CERT or the system bundle)
#   PIP_INDEX_URL / PIP_EXTRA_INDEX_URL   package index (http/https only; default pypi.org)
#   DEBIAN_MIRROR=http://...       mirror for debootstrap (default: from /etc/apt/sources.list*)
#   HTTP(S)_PROXY / NO_PROXY       passed to the build (apt and pip inside it), if set
#   DOCKER=/usr/bin/docker         docker client (needs BuildKit; default /usr/bin/docker if present)
set -euo pipefail
cd "$(dirname "$0")/.."

VARIANT=${VARIANT:-cpu}
if [[ $VARIANT == gpu ]]; then
  DOCKERFILE=docker/Dockerfile.gpu
  IMAGE=${IMAGE:-diffres-service:gpu}
else
  DOCKERFILE=Dockerfile
  IMAGE=${IMAGE:-diffres-service:cpu}
fi
# The base image's one home is the Dockerfile's `ARG BASE_IMAGE=` line; BASE_IMAGE overrides it.
BASE_IMAGE=${BASE_IMAGE:-$(sed -n 's/^ARG BASE_IMAGE=//p' "$DOCKERFILE" | head -n 1)}
[[ -n $BASE_IMAGE ]] || { echo "no ARG BASE_IMAGE= in $DOCKERFILE" >&2; exit 1; }
if [[ -z ${DOCKER:-} ]]; then
  if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi

log() { printf '[build] %s\n' "$*" >&2; }

ROOTFS=""
cleanup() {
  if [[ -n $ROOTFS && -d $ROOTFS ]]; then
    umount -R "$ROOTFS/proc" "$ROOTFS/sys" 2>/dev/null || true
    rm -rf --one-file-system "$ROOTFS"
  fi
}
trap cleanup EXIT

"$DOCKER" info >/dev/null 2>&1 || { log "docker daemon not reachable via '$DOCKER'"; exit 1; }

debian_mirror() {
  # First Debian archive URI apt uses here (deb822 or one-line format).
  local uri
  uri=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
        | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

make_debian_base() {
  # debian:<suite>[-slim] from debootstrap, trimmed like the official slim images.
  local suite=$1 mirror rootfs
  command -v debootstrap >/dev/null || { log "no registry and no debootstrap (apt-get install debootstrap)"; exit 1; }
  [[ $(id -u) == 0 ]] || { log "debootstrap needs root"; exit 1; }
  mirror=${DEBIAN_MIRROR:-$(debian_mirror)}
  rootfs=$(mktemp -d /tmp/diffres-rootfs.XXXXXX)
  ROOTFS=$rootfs
  log "making $BASE_IMAGE with debootstrap ($suite from $mirror)"
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/tmp/diffres-debootstrap.log 2>&1 \
    || { log "debootstrap failed, see /tmp/diffres-debootstrap.log"; exit 1; }
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} $suite-security main
EOF
  # As in the official slim images: later package installs skip docs, man pages and locales.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
  echo 'APT::Install-Recommends "false";' >"$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
  rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/man/* \
         "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  tar -C "$rootfs" -c . | "$DOCKER" import - "$BASE_IMAGE" >/dev/null
}

if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  if timeout 300 "$DOCKER" pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    log "pulled $BASE_IMAGE"
  elif [[ $BASE_IMAGE =~ ^debian:([a-z]+)(-slim)?$ ]]; then
    make_debian_base "${BASH_REMATCH[1]}"
  else
    log "$BASE_IMAGE is neither local nor pullable (load it with 'docker load' first)"; exit 1
  fi
fi

compgen -G 'src/diffres/models/*.onnx' >/dev/null || log "WARNING: src/diffres/models/ has no .onnx: the image will never be ready"

args=(--network host -f "$DOCKERFILE" -t "$IMAGE" --build-arg "BASE_IMAGE=$BASE_IMAGE")
ca=${PIP_CA_BUNDLE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
if [[ -s $ca ]]; then args+=(--secret "id=pipca,src=$ca"); fi
# Only network indexes make sense inside the build (file:// paths of this host do not exist there).
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL; do
  urls=$(tr ' ' '\n' <<<"${!var:-}" | grep -E '^https?://' | paste -sd' ' || true)
  if [[ -n $urls ]]; then args+=(--build-arg "$var=$urls"); fi
done

# Proxy variables are predefined build ARGs (kept out of the image history): pass them through.
for var in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  if [[ -n ${!var:-} ]]; then args+=(--build-arg "$var=${!var}"); fi
done

log "building $IMAGE from $DOCKERFILE (base $BASE_IMAGE)"
DOCKER_BUILDKIT=1 "$DOCKER" build "${args[@]}" .
size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
log "built $IMAGE: $((size / 1000000)) MB"
