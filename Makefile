# Guardian. `make demo` and `make test` set up everything first (idempotent).
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test test-fast setup-llm bench soak clean

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

# 30 minutes: the demo shop, mixed-protocol and hostile load, agent killed -9 twice (bench/soak.py)
soak: setup
	@$(PY) -m bench.soak --minutes 30 --json $(SOAK_ARGS)

clean:
	rm -rf .venv build *.egg-info .pytest_cache
