# Every target creates the virtual environment it needs from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit proto bench bench-ab bench-enrich bench-attribution bench-redis clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

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

# The service against the pass-through, alternating, to compare changes on a shared machine.
bench-ab: $(STAMP)
	$(BIN)/python -m benchmarks.ab

# In-process cost of the span path (prints figures; not a test).
bench-enrich: $(STAMP)
	$(BIN)/python -m benchmarks.enrich

# Attribution precision/recall on a simulated day (prints the table; not a test).
bench-redis: $(STAMP)
	$(BIN)/python -m benchmarks.redis_share
	$(BIN)/python -m benchmarks.redis_share --events 500 --spacing-ms 2

bench-attribution: $(STAMP)
	$(BIN)/python -m benchmarks.attribution

# Regenerate the session API's Python code after editing proto/.
proto: $(STAMP)
	PATH=$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -Iproto \
		--python_out=processor/api/gen --mypy_out=processor/api/gen \
		proto/user_enricher/v1/sessions.proto

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache *.egg-info
