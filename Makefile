# Guardian. `make demo` and `make test` set up everything first (idempotent).
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1
# What `make test-fast` leaves out: eBPF, root, real servers, slow runs, the local LLM.
FAST := not ebpf and not root and not servers and not slow and not llm

.PHONY: setup setup-demo demo test test-fast setup-llm bench eval eval-memory eval-llm lab lab-heldout soak fuzz clean

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

# The local LLM agent beside the deterministic ranking on a fixed 30-case subset of evals/lab
# (bench/llm_eval.py; docs/llm-eval.md). Long: minutes per case on 2 cores.
LLM_MODEL ?= 1.5b
eval-llm: setup-llm
	nice -n 10 $(PY) -m bench.llm_eval --model $(LLM_MODEL) $(LLM_EVAL_ARGS)

# Incident memory on repeated faults of the recorded tuning cases, with memory vs without: as
# recorded, then without span status (where the engine ranks the real cause lower more often).
eval-memory: setup
	@nice -n 10 $(PY) -m guardian.memory.measure evals/lab
	@rm -rf build/memory-nostatus && $(PY) -m guardian.evals.variants evals/lab build/memory-nostatus --variant nostatus
	@echo; echo "== evals/lab without span status"; nice -n 10 $(PY) -m guardian.memory.measure build/memory-nostatus

# Fault lab (lab/README.md): record labelled cases with the real eBPF capture. Long: about
# 1.4 min per case per topology, two topologies side by side on one capture; cases already
# there are kept (missing ones, e.g. dropped for capture loss, are recorded again). lab.shrink
# then thins ordinary traces (a case is shrunk once); lab.coverage notes how much traffic was kept.
LAB_CASES ?= 32
# Seeds 15 and 16 add cases of the classes the investigator found hardest.
LAB_WEAK = cpu_contention,lock_contention,wrong_return,pool_exhaustion,process_pause,exception,network_delay,cpu_throttle
# Seeds 17-20: CPU contention of the shared-allowance mechanism, and quiet no-fault windows.
LAB_CPU = cpu_contention,wrong_return,process_pause
# Seeds 23-24: calm windows with what they carry in real life, and mild faults at quiet services.
LAB_CALM = plain,batch,restart,load-up,load-down,drift,bad-client,cold,past-end
lab: setup
	nice -n 10 $(PY) -m lab.record --topology shop --cases 16 --seed 1 --out evals/lab
	nice -n 10 $(PY) -m lab.record --topology mesh12 --cases 26 --seed 11 --out evals/lab
	nice -n 10 $(PY) -m lab.record --topology mesh12 --cases $(LAB_CASES) --seed 13 --out evals/lab \
		--none-share 0.15 --with shop:3:$(LAB_CASES):evals/lab:21000
	nice -n 10 $(PY) -m lab.record --topology mesh12 --cases 7 --seed 14 --out evals/lab
	nice -n 10 $(PY) -m lab.record --topology mesh12 --cases 22 --seed 15 --out evals/lab --none-share 0.18 \
		--classes $(LAB_WEAK) --with shop:16:22:evals/lab:21000
	nice -n 10 $(PY) -m lab.record --topology mesh12 --cases 16 --seed 17 --out evals/lab --none-share 0.25 \
		--own-balance --classes $(LAB_CPU) --with shop:18:16:evals/lab:21000
	nice -n 10 $(PY) -m lab.record --topology mesh12 --cases 6 --seed 19 --out evals/lab --none-share 0.2 \
		--own-balance --classes cpu_contention --with shop:20:6:evals/lab:21000
	nice -n 10 $(PY) -m lab.record --topology mesh12 --cases 16 --seed 23 --out evals/lab --port-base 26000 \
		--none-share 0.7 --own-balance --strength mild --targets search,partner-api,notify,fulfil \
		--calm $(LAB_CALM) --with shop:24:14:evals/lab:28000
	$(PY) -m lab.shrink evals/lab
	$(PY) -m lab.coverage evals/lab --write >/dev/null

lab-heldout: setup
	nice -n 10 $(PY) -m lab.record --topology grid14 --cases 26 --seed 101 --out evals/heldout
	nice -n 10 $(PY) -m lab.record --topology shop --cases 14 --seed 102 --out evals/heldout
	nice -n 10 $(PY) -m lab.record --topology grid14 --cases $(LAB_CASES) --seed 103 --out evals/heldout \
		--none-share 0.15 --with shop:104:$(LAB_CASES):evals/heldout:25000
	nice -n 10 $(PY) -m lab.record --topology grid14 --cases 7 --seed 106 --out evals/heldout
	nice -n 10 $(PY) -m lab.record --topology shop --cases 2 --seed 105 --out evals/heldout --none-share 0 \
		--classes tls_expiry
	$(PY) -m lab.shrink evals/heldout
	$(PY) -m lab.coverage evals/heldout --write >/dev/null

# make bench: list them; make bench BENCH_ARGS="parsers --seconds 1"; make bench BENCH_ARGS=all
bench: setup
	@$(PY) -m bench.run $(BENCH_ARGS)

# 30 minutes: the demo shop, mixed-protocol and hostile load, agent killed -9 twice (bench/soak.py)
soak: setup
	@$(PY) -m bench.soak --minutes 30 --json $(SOAK_ARGS)

# Long fuzzing (bench/fuzz.py): FUZZ_INPUTS per parser and detector, seeded; `make test` keeps a short run.
FUZZ_INPUTS ?= 1000000
FUZZ_JOBS ?= 2
fuzz: setup
	nice -n 10 $(PY) -m bench.fuzz --inputs $(FUZZ_INPUTS) --jobs $(FUZZ_JOBS) $(FUZZ_ARGS) \
		--json bench/results/fuzz-$$(date -u +%F).json.gz

clean:
	rm -rf .venv build *.egg-info .pytest_cache
