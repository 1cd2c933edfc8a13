# gradstop: `make demo` runs the main job, `make test` the tests. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-slow test-all docs bench bench-figures figures gallery peer peer-venv clean

install: $(STAMP)

# constraints.txt pins torch to the CPU wheel on these machines; pyproject keeps ranges.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[all]"
	touch $(STAMP)

# Main job: three gradient flows on the 2-pole cartpole swing-up, 3 seeds each (about two minutes on 2 cores);
# writes results/demo: demo.png (loss, seeds' spread), filmstrip.png and swingup.gif (the trained policies).
# Run again: finished runs are skipped, interrupted ones resume from their last checkpoint.
demo: $(STAMP)
	$(BIN)/python -m experiments.demo $(DEMO_ARGS)

# Default test run (excludes tests marked slow) on two workers, one intra-op thread each (tests/conftest.py),
# then the benchmark suite's smoke subset, untimed.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow" --durations=15
	$(BIN)/python -m pytest benchmarks --quick --benchmark-disable -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# The default benchmark grid (the published setting: neural sim, H 1–150, batch 1 and 256, the none+input
# pair, JAX and torch, native / fused / compile=True; about 8 min on 2 cores): writes benchmark.json.
# The whole grid (hours; Brax compiles dominate): make bench BENCH_ARGS=--full. A subset: BENCH_ARGS='-k b1'.
bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-json benchmark.json $(BENCH_ARGS)

# Runtime/memory-vs-horizon figures and the ratio tables from benchmark.json, into results/.
bench-figures: $(STAMP)
	$(BIN)/python experiments/benchmark_figures.py benchmark.json

# The study's figures (experiments/, docs/results.md): current ones are skipped, sweeps resume. FIG_ARGS: e.g. --quick,
# --only cartpole-study, --ray local. `make gallery` updates the committed gallery in docs/gallery.
figures: $(STAMP)
	$(BIN)/gradstop figures $(FIG_ARGS)

gallery: $(STAMP)
	$(BIN)/gradstop figures --out docs/gallery $(FIG_ARGS)

# gradstop BPTT vs Brax's own APG on the same task and budget. Brax's agents need jax 0.9.2, so this
# builds a second venv (.venv-peer, the `peer` extra) beside the main one. Writes results/apg-peer/.
PEER := .venv-peer
$(PEER)/.installed-stamp: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(PEER)
	$(PEER)/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[peer]"
	touch $@

peer: $(PEER)/.installed-stamp
	$(PEER)/bin/python experiments/apg_peer.py $(PEER_ARGS)

# Only the venv (the model-free figure, experiments/model_free.py, runs in it).
peer-venv: $(PEER)/.installed-stamp

# The API reference from the docstrings (pdoc), into docs/api/ (not committed); tests/test_docs.py checks that it
# builds and that every cross-reference in a docstring resolves.
docs: $(STAMP)
	$(BIN)/pdoc -d google -o docs/api gradstop gradstop.trainers gradstop.health gradstop.study gradstop.bench sims
	@echo "API reference: docs/api/index.html"

test-all: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(PEER) .pytest_cache .hypothesis
