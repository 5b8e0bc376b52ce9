# Two commands do all the set-up on a fresh machine: `make book` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# pip on this machine lists local wheel folders that may be absent; keep the log readable.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true
PYTEST_ARGS ?=
T0 := $(shell date +%s)

# ---- the demo scenario the book is built from (offline, CPU)
DEMO ?= build/demo
DEMO_SIZE ?= small
DEMO_SEED ?= 0
# The demo's own small open_clip encoder: embedding size e and epochs (the papers' CLIP has e = 512;
# a smaller e keeps `make book` within minutes on a 2-core CPU).
DEMO_ENCODER_EPOCHS ?= 24
DEMO_EMBED_DIM ?= 64
DEMO_MODEL := hafvt-demo-clip
DEMO_CKPT := $(DEMO)/encoders/$(DEMO_MODEL)/$(DEMO_MODEL).pt
DEMO_CACHE := $(DEMO)/embeddings/$(DEMO_MODEL)__$(DEMO_MODEL)

# ---- notebooks: papermill, one parameters file per target (notebooks/params/<target>.yaml)
TARGET ?= demo
PARAMS := notebooks/params/$(TARGET).yaml
NOTEBOOKS := $(sort $(wildcard notebooks/0*.ipynb))
# the demo's executed notebooks are the book's pages; other targets go to build/notebooks/<target>
NB_OUT := $(if $(filter demo,$(TARGET)),book/notebooks,build/notebooks/$(TARGET))
RUNS := build/runs/$(TARGET)
# FRESH=1 (default): retrain every run, so the notebooks show numbers of this code; FRESH=0 reuses finished runs.
FRESH ?= 1
REAL_DATA ?= ../shared/data/c2dsr/Food-Kitchen
# OpenMP threads that sleep instead of spinning when they wait: on a shared 2-core machine, spinning
# threads of concurrent torch processes slowed epochs 10-20x. Numerics are unchanged.
export OMP_WAIT_POLICY ?= PASSIVE

# ---- the book (Jupyter Book 1.x; renders the executed notebooks, never executes them)
BOOK_OUT := build/book
BOOK_HTML := $(BOOK_OUT)/_build/html
JB_FLAGS := -W -n --keep-going
CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser || command -v google-chrome || true)

.PHONY: install test test-kernels kernel-spread book demo notebooks html browser clean fk-mini lab demo-converged

install: $(STAMP)

# the book and test extras, and ray so that `make test` runs the Ray executor's tests (the package needs none of it)
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing hafvt and its dependencies into $(VENV) (torch is large; first time takes a few minutes)"
	$(BIN)/python -m pip install -q -e '.[book,test,ray]' 2>&1 | $(QUIET_PIP)
	@rm -f $(VENV)/.installed-* && touch $@

# `make test`: unit tests, the six notebooks under nbval in smoke mode (notebooks/conftest.py sets
# HAFVT_SMOKE=1: tiny demo, one epoch, one seed), and the browser test on the book rendered from the
# committed executed notebooks (a cheap build: no notebook is executed for it), and the attention page's
# explorer driven live in JupyterLab (tests/test_lab.py: smoke inputs, about 40 s).
# First, `hafvt provenance check`: every committed result (results/, the book's tables and executed
# notebooks) must have been made by the current sources; a change to the model without regenerating fails.
test: $(STAMP) html browser
	$(BIN)/hafvt provenance check
	HAFVT_BOOK_HTML=$(BOOK_HTML) $(BIN)/python -m pytest -q $(PYTEST_ARGS) tests notebooks --nbval-lax

# `make test-kernels`: the numeric tests again on a second set of CPU kernels (ATen's scalar "default"
# capability, MKL and oneDNN limited to AVX2): a tolerance that holds only for one kernel path fails here.
# On a machine whose CPU lacks AVX-512 the MKL/oneDNN limits change nothing, the ATen one still does.
NUMERIC_TESTS := tests/test_speed.py tests/test_model.py tests/test_ddp.py tests/test_train.py tests/test_metrics.py \
  tests/test_c2dsr_model.py tests/test_baselines.py tests/test_tricdr.py tests/test_mifn.py tests/test_psjnet.py tests/test_fusion_weights.py
KERNELS_ENV := ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
test-kernels: $(STAMP)
	$(KERNELS_ENV) $(BIN)/python -c "import torch; print('second kernels: ATen', torch.backends.cpu.get_cpu_capability())"
	$(KERNELS_ENV) $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) $(NUMERIC_TESTS)

# `make kernel-spread`: the book's demo tables trained again on the second kernels (same sources, rows, seeds,
# 2 runs at once as the notebooks run them), compared with the book's: results/kernel-spread/demo.json, the
# spread within which the verdict counts a difference as none. Run after `make book` (about 8 minutes).
kernel-spread: demo
	rm -rf build/kernel-spread/demo
	for k in 2 4; do $(KERNELS_ENV) $(BIN)/hafvt reproduce $(DEMO) --table $$k --params notebooks/params/demo.yaml \
	  --jobs 2 --quiet --out build/kernel-spread/demo || exit 1; done
	$(BIN)/python scripts/kernel_spread.py book/_static/results/demo build/kernel-spread/demo --out results/kernel-spread/demo.json

# `make book`: set-up, demo scenario, demo encoder, embeddings, all notebooks through papermill, HTML.
book: $(STAMP)
	$(MAKE) --no-print-directory notebooks TARGET=demo
	$(MAKE) --no-print-directory html
	@echo "make book: $$(( $$(date +%s) - $(T0) )) s"
	@echo "The book's index page: $(abspath $(BOOK_HTML))/index.html"

demo: $(DEMO_CACHE)/manifest.json $(DEMO)/embeddings/demo-oracle/manifest.json

# the demo's latent item attributes as an embedding cache: an upper bound on what fusion can extract
$(DEMO)/embeddings/demo-oracle/manifest.json: $(DEMO)/demo.json
	$(BIN)/hafvt demo-oracle $(DEMO)

$(DEMO)/demo.json: | $(STAMP)
	$(BIN)/hafvt demo $(DEMO) --size $(DEMO_SIZE) --seed $(DEMO_SEED)

$(DEMO_CKPT): $(DEMO)/demo.json
	$(BIN)/python -m hafvt.book demo-encoder $(DEMO) --epochs $(DEMO_ENCODER_EPOCHS) --embed-dim $(DEMO_EMBED_DIM) --seed $(DEMO_SEED)

$(DEMO_CACHE)/manifest.json: $(DEMO_CKPT)
	$(BIN)/hafvt embed $(DEMO) --model $(DEMO_MODEL) --pretrained $(DEMO_CKPT) --device cpu --workers 0

build/fk-mini/derived.json: | $(STAMP)
	@test -d $(REAL_DATA) || { echo "no real data at $(REAL_DATA): set REAL_DATA=/path/to/Food-Kitchen"; exit 2; }
	$(BIN)/hafvt derive $(REAL_DATA) build/fk-mini --train-from valid --train-fraction 0.9 --seed 0

# `make fk-mini [DEVICE=cuda]`: the committed real-data table results/fk-mini/ from its parameters file
# (the table records the file's content and this command). Only the runs' results.json are committed.
DEVICE ?=
JOBS ?= 2
fk-mini: build/fk-mini/derived.json
	$(BIN)/hafvt reproduce build/fk-mini --table 2 --params notebooks/params/fk-mini.yaml --out results/fk-mini $(if $(DEVICE),--device $(DEVICE))

# `make demo-converged [DEVICE=cuda]`: the committed demo tables trained to convergence (results/demo-converged/),
# shown on the verdict page beside the book's 4-epoch demo; lr x L2 from the papers' grid per row; 98 minutes on 2 cores (60-epoch budget; 97 with 40), resumable.
demo-converged: demo
	for k in 2 4; do $(BIN)/hafvt reproduce $(DEMO) --table $$k --params notebooks/params/demo-converged.yaml \
	  --jobs $(JOBS) --out results/demo-converged $(if $(DEVICE),--device $(DEVICE)) || exit 1; done

notebooks: $(STAMP) $(if $(filter demo,$(TARGET)),demo) $(if $(filter fk-mini,$(TARGET)),build/fk-mini/derived.json)
	@test -f $(PARAMS) || { echo "no parameters file $(PARAMS)"; exit 2; }
	@if [ "$(FRESH)" = 1 ]; then rm -rf $(RUNS); fi
	@mkdir -p $(NB_OUT)
	@for nb in $(NOTEBOOKS); do \
	  t=$$(date +%s); \
	  $(BIN)/papermill -k python3 --cwd . -f $(PARAMS) --no-progress-bar --log-level WARNING $$nb $(NB_OUT)/$$(basename $$nb) || exit 1; \
	  echo "  $$(basename $$nb): $$(( $$(date +%s) - t )) s"; \
	done
	@echo "executed notebooks ($(TARGET)) in $(NB_OUT)/, results in $(RUNS)/"

# `make lab`: JupyterLab on notebooks/, widgets live, with the kernel the notebooks name (python3) running this
# .venv's Python, and the demo's inputs of the attention page: the demo scenario and its HAF-VT run of seed 0
# (trained by the training notebook, executed into build/notebooks/lab/, when `make book` has not made it).
# The notebooks' default parameters are the demo's. Host and port: LAB_ARGS="--ip=0.0.0.0 --port=8899".
# notebooks/ holds the committed sources, unexecuted: clear outputs before committing a notebook saved in Lab.
LAB_ARGS ?=
LAB_RUN := build/runs/demo/tables/runs/hafvt/seed0/checkpoint.pt
KERNEL := $(VENV)/share/jupyter/kernels/python3/kernel.json

lab: $(STAMP) demo $(LAB_RUN) $(KERNEL)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

$(LAB_RUN): | $(STAMP) demo
	@mkdir -p build/notebooks/lab
	$(BIN)/papermill -k python3 --cwd . -f notebooks/params/demo.yaml --no-progress-bar --log-level WARNING notebooks/03_training.ipynb build/notebooks/lab/03_training.ipynb

# the kernel named python3 (the notebooks' kernelspec, papermill's -k) runs this environment's Python
$(KERNEL): $(STAMP)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (hafvt .venv)"

# Render the executed notebooks in book/notebooks/ (fails on any warning).
html: $(STAMP)
	$(BIN)/python -m hafvt.book decisions book/decisions.md
	$(BIN)/jupyter-book build book --config _config.yml $(JB_FLAGS) --path-output $(BOOK_OUT)

# A system Chromium for the browser test; Debian's package when root (as in CI); else the test says how.
browser:
	@if [ -z "$(CHROMIUM)" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium for the browser test"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	    || echo "could not install chromium; the browser test will fail and say how to install it"; \
	fi

clean:
	rm -rf build _build
