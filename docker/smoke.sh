#!/usr/bin/env bash
# Smoke test of the image: build, run with host networking on free ports, wait for readiness,
# classify one real clip (or a generated WAV), check the JSON, infer once over gRPC (OIP v2, from
# inside the container: docker/smoke_grpc.py), check the container's own HEALTHCHECK and non-root
# user. The container is removed on every exit path.
#
# Environment (all optional):
#   IMAGE=diffres-service:cpu   image to test        SKIP_BUILD=1       test IMAGE as it is
#   PORT=<free port>            port on the host      READY_TIMEOUT=120  seconds to wait for /readyz
#   GRPC_PORT=<free port>       gRPC port on the host
#   SMOKE_CLIP=path             clip to post          HEALTH_TIMEOUT=60  seconds to wait for "healthy"
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-diffres-service:cpu}
READY_TIMEOUT=${READY_TIMEOUT:-120}
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-60}
if [[ -z ${DOCKER:-} ]]; then
  if [[ -x /usr/bin/docker ]]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi
export DOCKER IMAGE
PY=$(command -v python3 || command -v python)
NAME=diffres-smoke-$$
STARTED=0

log() { printf '[smoke] %s\n' "$*" >&2; }

cleanup() {
  local rc=$?
  if [[ $STARTED == 1 ]]; then
    if [[ $rc != 0 ]]; then
      log "FAILED (exit $rc); container logs:"
      "$DOCKER" logs --tail 50 "$NAME" 2>&1 | sed 's/^/    /' >&2 || true
    fi
    "$DOCKER" rm -f "$NAME" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ ${SKIP_BUILD:-0} == 1 ]] || bash docker/build.sh

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=${PORT:-$(free_port)}
GRPC_PORT=${GRPC_PORT:-$(free_port)}
CLIP=${SMOKE_CLIP:-$(find ../shared/data/keywords -name '*.flac' 2>/dev/null | sort | head -n1 || true)}

log "starting $IMAGE as $NAME on 127.0.0.1:$PORT (gRPC $GRPC_PORT)"
"$DOCKER" run -d --name "$NAME" --network host -e DIFFRES_PORT="$PORT" -e DIFFRES_GRPC_PORT="$GRPC_PORT" \
  "$IMAGE" >/dev/null
STARTED=1

"$PY" docker/smoke_check.py "http://127.0.0.1:$PORT" ${CLIP:+"$CLIP"} --ready-timeout "$READY_TIMEOUT"

"$DOCKER" exec -i "$NAME" python - "$GRPC_PORT" < docker/smoke_grpc.py
log "gRPC: ServerReady and ModelInfer answered on port $GRPC_PORT"

uid=$("$DOCKER" exec "$NAME" id -u)
[[ $uid != 0 ]] || { log "container runs as root"; exit 1; }
log "runs as uid $uid"

deadline=$((SECONDS + HEALTH_TIMEOUT))
until [[ $("$DOCKER" inspect -f '{{.State.Health.Status}}' "$NAME") == healthy ]]; do
  ((SECONDS < deadline)) || { log "HEALTHCHECK not healthy after ${HEALTH_TIMEOUT}s"; exit 1; }
  sleep 2
done
log "HEALTHCHECK: healthy"
log "PASSED"
