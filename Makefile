# Guardian. `make demo` and `make test` set up everything first (idempotent).
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test test-fast setup-llm bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) -m guardian.cli.main demo

test: setup
	@$(PY) -m pytest tests $(PYTEST_ARGS)

setup-llm: setup
	@bash scripts/setup-llm.sh

bench: setup
	@$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf .venv build *.egg-info .pytest_cache
