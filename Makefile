# ParaQA: `make demo` runs the whole pipeline on the embedded default; `make test` runs the tests.
# Both set everything up first (apt packages, a virtual environment, Python packages, embedded models, kernel).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := espeak-ng flite sox libsndfile1
KERNEL := paraqa
SETUP_STAMP := $(VENV)/.paraqa-setup
PYTEST_ARGS ?=

# The learned offline judge (judge/learned.py), trained here from the dev graded sets (~2 min on 2 cores, once).
JUDGE_MODEL := $(or $(PARAQA_CACHE),outputs/cache)/judge/learned_v2/meta.json
JUDGE_SOURCES := $(wildcard paraqa_utils/judge/graded/graded_v1.jsonl paraqa_utils/judge/graded/heldout_v1.jsonl \
  paraqa_utils/judge/graded/dev_v*.jsonl) paraqa_utils/judge/features.py paraqa_utils/judge/perturb.py \
  paraqa_utils/judge/quantities.py paraqa_utils/judge/learned.py paraqa_utils/judge/offline.py \
  paraqa_utils/prompts/judge_words_v1.txt paraqa_utils/text.py

.PHONY: setup system demo smoke unlabelled test test-fast lab bench clean-runs help annotator-env judge-model

help:
	@echo "make demo   - set up, then run the whole pipeline on the embedded default (params/demo.yaml)"
	@echo "make test   - set up, then run the test suite (includes one smoke run of the pipeline)"
	@echo "make smoke  - set up, then run the pipeline on params/smoke.yaml (CI size)"
	@echo "make unlabelled - set up, then annotate label-free real speech (params/unlabelled.yaml, stages 00-01)"
	@echo "make lab    - set up, then start JupyterLab with the '$(KERNEL)' kernel"
	@echo "make bench  - set up, then run the benchmarks in bench/"
	@echo "make judge-model - train the learned offline judge (part of setup; again when its sources change)"
	@echo "make annotator-env NAME=funasr - an isolated venv (.venv-annotators/NAME) for an ext: annotator"

setup: system $(SETUP_STAMP) $(JUDGE_MODEL)

judge-model: $(SETUP_STAMP) $(JUDGE_MODEL)

$(JUDGE_MODEL): $(SETUP_STAMP) $(JUDGE_SOURCES)
	$(BIN)/python -m paraqa_utils.judge.learned train

# System tools the pipeline calls (TTS engines, sox). As root we install them; otherwise we say how.
system:
	@missing=""; for c in espeak-ng flite sox; do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo ">> installing apt packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else \
	    echo "missing system tools:$$missing"; \
	    echo "run: sudo apt-get install -y $(APT_PACKAGES)"; exit 1; \
	  fi; \
	fi

# Rebuilt only when a requirements file or pyproject.toml changes.
$(SETUP_STAMP): requirements/base.txt requirements/server.txt requirements/embedded.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch is pinned in base.txt, so pip takes the CPU build and never a multi-GB CUDA one.
	$(BIN)/python -m pip install -q -r requirements/base.txt
	# llama.cpp's server builds from source; portable flags: a native build crashes on VMs. LLAVA_BUILD=OFF skips
	# the multimodal library (mtmd: image/audio chat formats only, imported lazily), a large part of the compile.
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" $(BIN)/python -m pip install -q -r requirements/server.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements/embedded.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python ($(KERNEL))" >/dev/null
	$(BIN)/python -m paraqa_utils.assets --convert
	@touch $@

demo: setup
	$(BIN)/python -m paraqa_utils.pipeline --profile demo

smoke: setup
	$(BIN)/python -m paraqa_utils.pipeline --profile smoke

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The paper's setting: 01 labels audio without labels, with a recogniser trained by a labelled run (demo's 00-01,
# ~5 min on 2 cores; the smoke corpus is too small to train one worth applying).
RECOGNISER_RUN := labelled_recogniser
unlabelled: setup
	@if [ ! -f outputs/runs/$(RECOGNISER_RUN)/01_annotate/stage.json ] || ! grep -q '"done"' outputs/runs/$(RECOGNISER_RUN)/01_annotate/stage.json; then \
	  if [ -d outputs/runs/$(RECOGNISER_RUN) ]; then how="--resume $(RECOGNISER_RUN)"; else how="--profile demo --run-id $(RECOGNISER_RUN)"; fi; \
	  $(BIN)/python -m paraqa_utils.pipeline $$how --only 00_corpus,01_annotate || exit 1; \
	fi
	$(BIN)/python -m paraqa_utils.corpus manifest --real-speech --out outputs/cache/unlabelled/manifest.csv
	$(BIN)/python -m paraqa_utils.pipeline --profile unlabelled --only 00_corpus,01_annotate

# Everything but the whole-pipeline smoke run and the server start-up (seconds, for editing loops).
test-fast: setup
	$(BIN)/python -m pytest -m "not smoke and not server" $(PYTEST_ARGS)

# JupyterLab refuses to start as root (containers, CI images) unless told; only root gets the flag, so a normal
# user keeps the safety check. `=`, not `:=`: `id -u` runs only when this recipe is expanded.
LAB_ROOT_FLAG = $(if $(filter 0,$(shell id -u)),--allow-root)
lab: setup
	$(BIN)/jupyter lab $(LAB_ROOT_FLAG) notebooks/

bench: setup
	@for b in bench/bench_*.py; do echo ">> $$b"; $(BIN)/python $$b || exit 1; done

# An external annotator's own environment (01's ext: backends run it as a subprocess): requirements/annotator-NAME.txt
annotator-env:
	@test -n "$(NAME)" || { echo "usage: make annotator-env NAME=funasr (requirements/annotator-NAME.txt)"; exit 2; }
	@test -f requirements/annotator-$(NAME).txt || { echo "no requirements/annotator-$(NAME).txt"; exit 2; }
	$(PYTHON) -m venv .venv-annotators/$(NAME)
	.venv-annotators/$(NAME)/bin/python -m pip install -q -r requirements/annotator-$(NAME).txt
	@echo "ext:$(NAME) command: .venv-annotators/$(NAME)/bin/python paraqa_utils/annotate/ext_$(NAME).py"

clean-runs:
	rm -rf outputs/runs
