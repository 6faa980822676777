# DiffRes audio-classification service, CPU image (onnxruntime; no torch).
#
# Build (BuildKit is required for the pip CA secret; see docker/build.sh, which also
# makes the debian base with debootstrap on machines without an image registry):
#   DOCKER_BUILDKIT=1 docker build --network host \
#     --secret id=pipca,src=/etc/ssl/certs/ca-certificates.crt -t diffres-service:cpu .
# Run:
#   docker run --rm -p 8000:8000 -p 8001:8001 diffres-service:cpu
# With a model repository mounted over the shipped models, reloaded without a restart (docs/repository.md):
#   docker run --rm -p 8000:8000 -v $PWD/models:/srv/models:ro -e DIFFRES_MODEL_POLL_S=10 diffres-service:cpu
# Everything is configured by DIFFRES_* environment variables (see the README).

ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- builder
FROM ${BASE_IMAGE} AS builder

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Empty by default (pypi.org); set them to use a mirror / an internal index.
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=

WORKDIR /src
# Dependencies first, in their own layer: code changes do not reinstall them.
# The CA bundle comes as a build secret (never stored in a layer), for TLS-intercepting proxies.
COPY pyproject.toml docker/constraints.txt ./
RUN --mount=type=secret,id=pipca \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    [ -n "$PIP_INDEX_URL" ] || unset PIP_INDEX_URL; \
    [ -n "$PIP_EXTRA_INDEX_URL" ] || unset PIP_EXTRA_INDEX_URL; \
    python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt  # exact versions: docker/constraints.txt

# The package itself: base dependencies only (no extras, so no torch).
COPY README.md* ./
COPY src ./src
RUN --mount=type=secret,id=pipca \
    if [ -s /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    [ -n "$PIP_INDEX_URL" ] || unset PIP_INDEX_URL; \
    [ -n "$PIP_EXTRA_INDEX_URL" ] || unset PIP_EXTRA_INDEX_URL; \
    [ -f README.md ] || echo "# diffres" > README.md; \
    pip install -c constraints.txt --no-deps . \
 && pip uninstall -y pip setuptools \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

# ---------------------------------------------------------------- runtime
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
 && groupadd --system --gid 10001 diffres \
 && useradd --system --uid 10001 --gid diffres --home-dir /srv --no-create-home diffres

COPY --from=builder /opt/venv /opt/venv
WORKDIR /srv
COPY --chown=root:root src/diffres/models/*.onnx ./models/

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DIFFRES_HOST=0.0.0.0 \
    DIFFRES_PORT=8000 \
    DIFFRES_GRPC_PORT=8001 \
    DIFFRES_MODEL_DIR=/srv/models \
    DIFFRES_LOG_FORMAT=json

USER diffres
# 8000: HTTP (REST /v1, OIP /v2, /metrics); 8001: OIP v2 over gRPC (Triton's port; DIFFRES_GRPC_PORT).
EXPOSE 8000 8001

# Readiness (models loaded), not mere liveness; slim has no curl, so python's urllib.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('DIFFRES_PORT', '8000'), timeout=4)"]

CMD ["diffres", "serve"]
