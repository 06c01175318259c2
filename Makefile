# Guardian. `make demo` and `make test` set up everything first (idempotent).
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test test-fast setup-llm bench clean lab lab-heldout

setup:
	@bash scripts/setup.sh

demo: setup
	@$(PY) -m guardian.cli.main demo

test: setup
	@$(PY) -m pytest tests $(PYTEST_ARGS)

setup-llm: setup
	@bash scripts/setup-llm.sh

# Fault lab (lab/README.md): record labelled cases with the real eBPF capture. Long (about
# 1.5 min per case); LAB_CASES sets how many per topology.
LAB_CASES ?= 20
lab: setup
	nice -n 10 $(PY) -m lab.record --topology shop --cases $(LAB_CASES) --seed 1 --out evals/lab
	nice -n 10 $(PY) -m lab.record --topology mesh12 --cases $(LAB_CASES) --seed 11 --out evals/lab

lab-heldout: setup
	nice -n 10 $(PY) -m lab.record --topology grid14 --cases $(LAB_CASES) --seed 101 --out evals/heldout
	nice -n 10 $(PY) -m lab.record --topology shop --cases $(LAB_CASES) --seed 102 --out evals/heldout

bench: setup
	@$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf .venv build *.egg-info .pytest_cache
