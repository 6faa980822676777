# Set-up is idempotent: .venv is created once and filled once per dependency set (stamp files).
# `make serve` needs only the serving dependencies (no torch); everything else gets the full set.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SERVE_STAMP := $(VENV)/.serve-installed
FULL_STAMP := $(VENV)/.full-installed
LOAD_STAMP := $(VENV)/.load-installed

.PHONY: install install-serve serve test docs wheel-check examples synth train-keywords train-digits docker docker-smoke docker-ci loadtest bench serve-ray triton-repo eval-events reliability reliability-short

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(SERVE_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

# torch FIRST and pinned (a CPU wheel); an unpinned torch pulls several GB of CUDA packages.
$(FULL_STAMP): $(SERVE_STAMP)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[train,test,load,ray,interop,browser,reliability,docs]"
	touch $@

RAY_STAMP := $(VENV)/.ray-installed

# Ray Serve is an optional extra: the plain service and its image never install it.
$(RAY_STAMP): $(SERVE_STAMP)
	$(BIN)/pip install -q -e ".[ray]"
	touch $@

# The service on Ray Serve in the foreground: DIFFRES_PORT, DIFFRES_RAY_REPLICAS (default 2); Ctrl-C stops Ray.
serve-ray: $(RAY_STAMP)
	$(BIN)/python -m diffres.server.ray_main

# Triton model repository for the shipped models in model_repository/ (reads the graphs; no torch).
triton-repo: $(SERVE_STAMP)
	$(BIN)/python -m diffres.triton

# The load test drives the service and onnxruntime only: no torch needed.
$(LOAD_STAMP): $(SERVE_STAMP)
	$(BIN)/pip install -q -e ".[load]"
	touch $@

install-serve: $(SERVE_STAMP)
install: $(FULL_STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/diffres serve

# pytest exits 5 when it collects nothing: that is a failure here, not a pass.
test: $(FULL_STAMP)
	$(BIN)/python -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

docker:
	bash docker/build.sh

docker-smoke:
	bash docker/smoke.sh

# What CI runs: installs docker.io and starts dockerd when it can (root), else says why it skips.
docker-ci:
	bash docker/ci.sh

loadtest: $(LOAD_STAMP)
	$(BIN)/python -m tools.loadtest

bench: $(FULL_STAMP)
	$(BIN)/python -m tools.bench

# Event detection on long recordings (validation keywords in noise and unseen speech) and live-stream
# latency: reports/EVENTS.md and reports/events.json. About 10 minutes on 2 cores (the report gives its wall time).
eval-events: $(FULL_STAMP)
	$(BIN)/python -m tools.bench.events

# The service under abuse (reliability/): schemathesis, bad inputs, hostile clients, soak, overload,
# SIGTERM / kill -9 / corrupt model; writes reports/RELIABILITY.md. Options: make reliability ARGS="--soak-minutes 3".
reliability: $(FULL_STAMP)
	$(BIN)/python -m tools.reliability $(ARGS)

# The few-minute version CI runs (.ci/run): one-minute soak, a few hundred schemathesis cases.
reliability-short: $(FULL_STAMP)
	$(BIN)/python -m tools.reliability --short $(ARGS)

DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(SERVE_STAMP)
	$(BIN)/pip install -q -e ".[docs]"
	touch $@

# The documentation site (mkdocs-material; API reference from the docstrings) into site/; --strict: a
# broken link or reference fails the build.
docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict

# The wheel in a fresh virtual environment: its only import is `diffres`, and it classifies a sample.
wheel-check: $(SERVE_STAMP)
	bash tools/wheel_check.sh

# examples/ rebuilt from ../shared/data (the sample recordings and their README).
examples: $(FULL_STAMP)
	$(BIN)/python -m tools.bench.example_audio examples

# The shipped models, from their seeds (docs: models and training). keywords: other speech made offline
# by Debian's TTS engines (data/synth, cached), then training with rooms, whole-word windows, hard-negative
# mining and the event rule chosen on validation, then export with its parity check (about an hour on
# 2 cores). digits: plain training (a few minutes).
SYNTH := data/synth
KEYWORDS := ../shared/data/keywords
DIGITS := ../shared/data/digits
# --8<-- [start:train]
synth: $(FULL_STAMP)
	$(BIN)/python -m diffres.train.synth --out $(SYNTH) --hours 2 --eval-hours 0.5 --keywords-from $(KEYWORDS) --seed 0

train-keywords: synth
	$(BIN)/diffres train --data $(KEYWORDS) --out runs/keywords --delta 0.5 --epochs 40 --seed 0 --threads 1 \
		--clip-seconds 1.5 --negatives $(DIGITS) $(SYNTH) --background-share 3 --rooms 2 \
		--mix-probability 0.8 --mix-snr-db -10 15 --context-probability 0.3 --partial-share 0.25 \
		--long-window-probability 0.4 --mine-rounds 1 --mine-hours 1 --mine-epochs 4 --event-hops 0.25 0.5 \
		--synthetic-positives $(SYNTH)
	$(BIN)/diffres export --checkpoint runs/keywords/best.pt --out src/diffres/models/keywords.onnx

train-digits: $(FULL_STAMP)
	$(BIN)/diffres train --data $(DIGITS) --out runs/digits --delta 0.5 --epochs 40 --seed 0 --threads 1
	$(BIN)/diffres export --checkpoint runs/digits/best.pt --out src/diffres/models/digits.onnx
# --8<-- [end:train]
