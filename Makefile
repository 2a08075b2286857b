# Every target creates the virtual environment it needs from the lock files, so a
# fresh clone installs exactly what was tested, whatever the registries serve today.
# pyproject.toml keeps the ranges for people installing the package elsewhere;
# `make lock` re-resolves them (runtime first, then dev constrained by it).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.txt
DEV_LOCK := requirements-dev.txt
# The build backend is locked too, so the editable install needs no unpinned download.
BUILD_REQ := setuptools>=77
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command 'make lock'

.PHONY: demo test lint typecheck unit proto lock bench bench-shapes bench-ab bench-enrich bench-floor bench-attribution bench-redis bench-memory bench-hostile e2e-openwebui lock-e2e clean

$(STAMP): $(DEV_LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve both locks from pyproject.toml's ranges (newest matching releases).
lock: $(STAMP)
	echo '$(BUILD_REQ)' | $(UV_COMPILE) - pyproject.toml -o $(LOCK)
	echo '$(BUILD_REQ)' | $(UV_COMPILE) - pyproject.toml --extra dev -c $(LOCK) -o $(DEV_LOCK)
	rm -f $(STAMP)

demo: $(STAMP)
	$(BIN)/user-enricher demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

# End-to-end over real gRPC sockets, one process per party: the service against a bare
# pass-through, latency, session and batch-size sweeps (prints Markdown; not a test).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.harness
	$(BIN)/python -m benchmarks.shapes

# Defaults and tuned, narrow and diverse (every span its own ip:port, 2,048 users) shapes,
# against two pass-through proxies in the same run.
bench-shapes: $(STAMP)
	$(BIN)/python -m benchmarks.shapes

# The service against the pass-through, alternating, to compare changes on a shared machine.
bench-ab: $(STAMP)
	$(BIN)/python -m benchmarks.ab

# In-process cost of the span path (prints figures; not a test).
bench-enrich: $(STAMP)
	$(BIN)/python -m benchmarks.enrich

# What the C calls every request needs cost per span, and the ceiling they leave.
bench-floor: $(STAMP)
	$(BIN)/python -m benchmarks.floor

# Redis propagation delay between two replicas vs a per-request round trip (not a test).
bench-redis: $(STAMP)
	$(BIN)/python -m benchmarks.redis_share
	$(BIN)/python -m benchmarks.redis_share --events 500 --spacing-ms 2

# Peak RSS of a service process under 64 senders of 3.9 MB requests, downstream hung.
bench-memory: $(STAMP)
	$(BIN)/python -m benchmarks.memory_bound

# A well-behaved sender's latency alone and while others post gzip bombs.
bench-hostile: $(STAMP)
	$(BIN)/python -m benchmarks.hostile_latency

# Attribution precision/recall on a simulated day (prints the table; not a test).
bench-attribution: $(STAMP)
	$(BIN)/python -m benchmarks.attribution
	$(BIN)/python -m benchmarks.attribution_dense

# Real-client end to end: a real Open WebUI 0.12.4 (its own venv, installed once), the
# filter from deploy/openwebui, an AgentGateway-shaped stand-in and the service, in two
# modes (filter only; Open WebUI's own traces on). NOT in CI or `make test`: the install
# is about 7 GB (CUDA torch), 3 minutes where pip finds torch on disk, far longer elsewhere.
OWUI_VENV := .venv-openwebui
OWUI_STAMP := $(OWUI_VENV)/.installed
# Open WebUI and the OpenTelemetry packages its telemetry needs, pinned with hashes
# (requirements-e2e-openwebui.in says why each is there; `make lock-e2e` refreshes).
OWUI_LOCK := requirements-e2e-openwebui.txt

$(OWUI_STAMP): $(OWUI_LOCK)
	$(PYTHON) -m venv $(OWUI_VENV)
	$(OWUI_VENV)/bin/python -m pip install --quiet --require-hashes --no-deps -r $(OWUI_LOCK)
	touch $(OWUI_STAMP)

lock-e2e: $(STAMP)
	$(BIN)/uv pip compile --quiet --python-version 3.11.7 --generate-hashes \
		--custom-compile-command 'make lock-e2e' requirements-e2e-openwebui.in -o $(OWUI_LOCK)

e2e-openwebui: $(STAMP) $(OWUI_STAMP)
	$(BIN)/python -m benchmarks.e2e_openwebui

# Regenerate the session API's Python code after editing proto/.
proto: $(STAMP)
	PATH=$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -Iproto \
		--python_out=processor/identity/intake/gen --mypy_out=processor/identity/intake/gen \
		proto/user_enricher/v1/sessions.proto

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache *.egg-info
