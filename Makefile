# Guardian. `make demo` and `make test` set up everything first (idempotent).
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test test-fast setup-llm bench eval clean

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) -m guardian.cli.main demo

test: setup
	@$(PY) -m pytest tests $(PYTEST_ARGS)

setup-llm: setup
	@bash scripts/setup-llm.sh

# The 16 generated scenarios, then every recorded case set there is (tuning, held-out).
eval: setup
	@$(PY) -m guardian.cli.main eval evals/scenarios --engine deterministic
	@for d in evals/lab evals/heldout; do \
		if [ -d $$d ]; then echo; echo "== $$d"; $(PY) -m guardian.cli.main eval $$d --engine deterministic; fi; \
	done

bench: setup
	@$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf .venv build *.egg-info .pytest_cache
