# Every target sets up from nothing: a fresh clone with Python 3.11 and pip is enough.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.bridge-installed
# Every family distribution in the repository: first-party families and plugins/*.
FAMILIES := $(patsubst %/pyproject.toml,%,$(wildcard bridge_*/pyproject.toml plugins/*/pyproject.toml))
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: demo demo-all test test-deep test-variants test-compat setup-compat setup-compat-sae bench lint setup clean mutate

setup: $(STAMP)

# torch first, pinned to the CPU build on disk: a bare `torch` pulls a multi-GB CUDA build.
$(STAMP): constraints.txt core/pyproject.toml $(foreach d,$(FAMILIES),$(d)/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -c constraints.txt -e "./core[viz,harvest,scale]" $(foreach d,$(FAMILIES),-e ./$(d)) pytest pytest-xdist hypothesis ruff mypy import-linter
	touch $(STAMP)

# The TransformerLens compatibility group: its own venv, so `make test` never needs transformer-lens.
COMPAT_VENV  ?= .venv-compat
COMPAT_PY    := $(COMPAT_VENV)/bin/python
COMPAT_STAMP := $(COMPAT_VENV)/.bridge-installed
COMPAT_PIP   := $(COMPAT_PY) -m pip install --quiet --disable-pip-version-check

setup-compat: $(COMPAT_STAMP)

$(COMPAT_STAMP): constraints.txt compat/constraints.txt core/pyproject.toml $(foreach d,$(FAMILIES),$(d)/pyproject.toml)
	test -x $(COMPAT_PY) || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PIP) --upgrade pip
	$(COMPAT_PIP) torch==2.13.0
	$(COMPAT_PIP) -c constraints.txt -c compat/constraints.txt transformer-lens \
		-e ./core $(foreach d,$(FAMILIES),-e ./$(d)) pytest hypothesis
	touch $(COMPAT_STAMP)

# The SAELens group: sae-lens needs transformer-lens<4, so it gets a venv of its own.
SAE_VENV  ?= .venv-compat-sae
SAE_PY    := $(SAE_VENV)/bin/python
SAE_STAMP := $(SAE_VENV)/.bridge-installed
SAE_PIP   := $(SAE_PY) -m pip install --quiet --disable-pip-version-check

setup-compat-sae: $(SAE_STAMP)

$(SAE_STAMP): constraints.txt compat_sae/constraints.txt core/pyproject.toml $(foreach d,$(FAMILIES),$(d)/pyproject.toml)
	test -x $(SAE_PY) || $(PYTHON) -m venv $(SAE_VENV)
	$(SAE_PIP) --upgrade pip
	$(SAE_PIP) torch==2.13.0
	$(SAE_PIP) -c constraints.txt -c compat_sae/constraints.txt sae-lens \
		-e ./core $(foreach d,$(FAMILIES),-e ./$(d)) pytest hypothesis
	touch $(SAE_STAMP)

# Both compatibility groups, each in its own venv; both run, and the target fails if either does.
test-compat: $(COMPAT_STAMP) $(SAE_STAMP)
	status=0; \
	$(COMPAT_PY) -m pytest compat/ || status=$$?; \
	$(SAE_PY) -m pytest compat_sae/ || status=$$?; \
	exit $$status

demo: $(STAMP)
	$(VENV)/bin/bridge demo --model examples/models/induction-2l --png examples/output/induction_head.png

# One circuit study on the trained model of every family: one table, one figure (examples/one_study_every_family.py).
demo-all: $(STAMP)
	$(VENV)/bin/bridge demo --all --models examples/models --png examples/output/one_study_every_family.png

# Two pytest workers (the machines have 2 cores); the real-checkpoint variants run in `make test-variants`.
# Core's tests run first on their own, with no family loaded (BRIDGE_LOAD_PLUGINS empty; core/tests/conftest.py
# then refuses any import of a family package); everything else runs after. Hypothesis is derandomized
# (HYPOTHESIS_PROFILE=bridge-ci, the default): a red run fails the same way again.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache
	BRIDGE_LOAD_PLUGINS= $(PY) -m pytest -n 2 -m "not variants" core/tests
	$(PY) -m pytest -n 2 -m "not variants" --ignore=core/tests

# The property suites several hundred examples deep, random (not derandomized): run now and then, not in CI, to find
# the next rare failure before CI does. A failure prints its seed; `--hypothesis-seed=N` replays it.
test-deep: $(STAMP)
	HYPOTHESIS_PROFILE=bridge-deep BRIDGE_PROPERTY_EXAMPLES=$${BRIDGE_PROPERTY_EXAMPLES:-300} $(PY) -m pytest -n 2 \
		-m "not variants" -k "properties or left_padding or any_shape or hook_subset" -p no:cacheprovider

# The conformance kit on every adapter's real-checkpoint config variants (`conformance_configs()`).
test-variants: $(STAMP)
	$(PY) -m pytest -n 2 -m variants

# Plant known bugs one at a time and report which tests catch each (slow; not part of `make test`).
mutate: $(STAMP)
	$(PY) tools/mutate.py

# The patching sweep against TransformerLens's helpers needs TransformerLens: it runs in the compatibility venv.
bench: $(STAMP) $(COMPAT_STAMP)
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/memory.py
	$(COMPAT_PY) benchmarks/patching.py

clean:
	rm -rf $(VENV) $(COMPAT_VENV) $(SAE_VENV)
