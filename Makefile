# Dovecote — the two commands a newcomer needs: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= ./data
# Development key for the `default` tenant; set your own in production.
export DOVECOTE_API_KEY ?= dev-key

.PHONY: serve test lint bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/dovecote migrate --data-dir $(DATA_DIR)
	$(BIN)/dovecote serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check app worker dovecote tests bench migrations

bench: $(STAMP)
	$(BIN)/python -m bench.feature_extraction
	$(BIN)/python -m bench.upload_to_model
	$(BIN)/python -m bench.predict_latency
	$(BIN)/python -m bench.finetune_throughput

clean:
	rm -rf $(VENV) .pytest_cache
