#!/usr/bin/env bash
# CI step: make docker usable if it can be (install docker.io + debootstrap, start dockerd), then
# run docker/smoke.sh. Exit 0: passed; 3: skipped, with the reason on stderr (no docker possible
# here); anything else: the smoke test failed. A dockerd started here is stopped again.
#
#   CI_DOCKER_TIMEOUT=2400   seconds for build + smoke (bounded, whatever happens)
set -euo pipefail
cd "$(dirname "$0")/.."

SKIP=3
DOCKERD_PID=""
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}

log() { printf '[docker-ci] %s\n' "$*" >&2; }
skip() { log "SKIPPED: $*"; exit "$SKIP"; }

cleanup() {
  if [[ -n $DOCKERD_PID ]]; then
    log "stopping the dockerd started here (pid $DOCKERD_PID)"
    kill "$DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=$(command -v docker || true); fi

apt_install() {
  [[ $(id -u) == 0 ]] || skip "not root: cannot install $*"
  command -v apt-get >/dev/null || skip "no apt-get: cannot install $*"
  log "installing $*"
  { timeout 300 apt-get update -q && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q "$@"; } \
    >/tmp/diffres-ci-apt.log 2>&1 || skip "apt-get install $* failed (see /tmp/diffres-ci-apt.log)"
}

# 1. A docker client with BuildKit (the docker.io package's /usr/bin/docker has it).
buildkit_ok() { local help; help=$(DOCKER_BUILDKIT=1 "$DOCKER" build --help 2>&1 || true); [[ $help == *--secret* ]]; }
if [[ -z $DOCKER ]] || ! buildkit_ok; then
  apt_install docker.io
  DOCKER=/usr/bin/docker
fi
export DOCKER

# 2. A daemon.
if ! "$DOCKER" info >/dev/null 2>&1; then
  [[ $(id -u) == 0 ]] || skip "docker daemon not running and not root to start it"
  command -v dockerd >/dev/null || apt_install docker.io
  log "starting dockerd (no bridge, no iptables: every build and run uses host networking)"
  dockerd --bridge=none --iptables=false >/tmp/diffres-ci-dockerd.log 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  "$DOCKER" info >/dev/null 2>&1 || skip "dockerd did not start in 60 s (see /tmp/diffres-ci-dockerd.log)"
fi

# 3. The base image: present, pullable, or makeable with debootstrap (build.sh does the making).
if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1 && ! timeout 300 "$DOCKER" pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
  [[ $BASE_IMAGE =~ ^debian: ]] || skip "$BASE_IMAGE is not available and no registry is reachable"
  command -v debootstrap >/dev/null || apt_install debootstrap
fi

# 4. Build + smoke, bounded.
log "build + smoke (at most ${CI_DOCKER_TIMEOUT:-2400} s)"
timeout "${CI_DOCKER_TIMEOUT:-2400}" bash docker/smoke.sh
