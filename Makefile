# Developer entry points. `make serve` and `make test` are the README's quick start.
SHELL := /bin/bash
VENV := .venv/bin
export PATH := $(CURDIR)/.cache/tools/bin:$(PATH)
TINY_MODEL := models/tiny-vits
PORT ?= 8000

.PHONY: setup serve test test-slow lint unit e2e figures figures-bench

setup:
	scripts/bootstrap.sh

$(TINY_MODEL)/config.json:
	$(VENV)/voicefleet make-tiny-model $(TINY_MODEL)

## serve: set up and serve the bundled English voice (MODEL=... for another: a Piper .onnx,
## facebook/mms-tts-eng, or MODEL=tiny for the random-weight test model)
serve:
	scripts/bootstrap.sh --server
ifeq ($(MODEL),tiny)
	$(MAKE) --no-print-directory $(TINY_MODEL)/config.json
	$(VENV)/voicefleet serve --model $(TINY_MODEL) --port $(PORT)
else
	$(VENV)/voicefleet serve $(if $(MODEL),--model $(MODEL)) --port $(PORT)
endif

lint:
	$(VENV)/ruff check .
	$(VENV)/mypy voicefleet server/voicefleet_server operator/voicefleet_operator bench/voicefleet_bench
	$(VENV)/lint-imports

## test: set up, lint, type-check and run the default (fast) test suite
test: setup lint
	$(VENV)/pytest $(PYTEST_ARGS)

## test-slow: the fast suite plus the slow tier (soaks, long fuzzing, real-voice and
## recognizer checks: tests marked @pytest.mark.slow); PYTEST_ARGS="-m slow" runs only those
test-slow: setup
	$(VENV)/pytest --slow $(PYTEST_ARGS)

## e2e: the real-cluster suite (needs a kubeconfig; see README)
e2e: setup
	$(VENV)/pytest tests/e2e --e2e $(PYTEST_ARGS)

## figures: README's and docs' figure tables from the last full test run and bench/results
figures:
	$(VENV)/python scripts/figures.py

## figures-bench: the same, keeping the committed reliability figures (no test run needed)
figures-bench:
	$(VENV)/python scripts/figures.py --keep-reliability
