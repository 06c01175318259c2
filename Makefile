# Guardian. `make demo` and `make test` set up everything first (idempotent).
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1
# What `make test-fast` leaves out: eBPF, root, real servers, slow runs, the local LLM.
FAST := not ebpf and not root and not servers and not slow and not llm

.PHONY: setup setup-demo demo test test-fast setup-llm bench eval lab lab-heldout soak clean

setup:
	@bash scripts/setup.sh test

setup-demo:
	@bash scripts/setup.sh demo

demo: setup-demo
	@$(PY) -m guardian.cli.main demo

test: setup
	@$(PY) -m pytest tests $(PYTEST_ARGS)

# No root, no servers, no set-up: needs a .venv made once by `make setup` (or `make setup-demo`).
test-fast:
	@[ -x $(PY) ] || { echo "no .venv: run make setup (as root) once" >&2; exit 2; }
	@$(PY) -m pytest tests -m "$(FAST)" -p no:cacheprovider $(PYTEST_ARGS)

setup-llm: setup
	@bash scripts/setup-llm.sh

# The 16 generated scenarios, then every recorded case set there is (tuning, held-out).
eval: setup
	@$(PY) -m guardian.cli.main eval evals/scenarios --engine deterministic
	@for d in evals/lab evals/heldout; do \
		if [ -d $$d ]; then echo; echo "== $$d"; $(PY) -m guardian.cli.main eval $$d --engine deterministic; fi; \
	done
	@# spans as public data sets carry them (no status, internal spans, sparse, partial): made, not kept
	@rm -rf build/lab-variants && $(PY) -m lab.variants evals/lab --out build/lab-variants --every 7 >/dev/null \
		&& $(PY) -m lab.variants evals/lab --out build/lab-variants --kinds calm >/dev/null
	@for v in build/lab-variants/*; do echo; echo "== evals/lab as $$(basename $$v)"; \
		$(PY) -m guardian.cli.main eval $$v --engine deterministic; done

# Fault lab (lab/README.md): record labelled cases with the real eBPF capture. Long (about
# 1.5 min per case); LAB_CASES sets how many per topology.
LAB_CASES ?= 20
lab: setup
	nice -n 10 $(PY) -m lab.record --topology shop --cases $(LAB_CASES) --seed 1 --out evals/lab
	nice -n 10 $(PY) -m lab.record --topology mesh12 --cases $(LAB_CASES) --seed 11 --out evals/lab

lab-heldout: setup
	nice -n 10 $(PY) -m lab.record --topology grid14 --cases $(LAB_CASES) --seed 101 --out evals/heldout
	nice -n 10 $(PY) -m lab.record --topology shop --cases $(LAB_CASES) --seed 102 --out evals/heldout

# make bench: list them; make bench BENCH_ARGS="parsers --seconds 1"; make bench BENCH_ARGS=all
bench: setup
	@$(PY) -m bench.run $(BENCH_ARGS)

# 30 minutes: the demo shop, mixed-protocol and hostile load, agent killed -9 twice (bench/soak.py)
soak: setup
	@$(PY) -m bench.soak --minutes 30 --json $(SOAK_ARGS)

clean:
	rm -rf .venv build *.egg-info .pytest_cache
