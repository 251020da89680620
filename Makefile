# One command runs the main job (`make demo`), one runs the tests (`make test`).
# Both create .venv and install what they need themselves; `make test` also installs Debian's
# prometheus package (promtool + server for the alert-rule and query tests) when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv kernel tools test demo bench clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# The extender's compiled filter and pod reader (guardgrid/_kernel.c, _pod_reader.c); rebuilt only when a source or the script changed.
kernel: venv
	$(PY) scripts/build_kernel.py --if-stale

tools:
	bash scripts/ensure-prometheus.sh

test: venv kernel tools
	$(PY) -m pytest -q

demo: venv kernel
	$(PY) -m evaluation.demo

bench: venv kernel
	$(PY) bench/extender.py
	$(PY) bench/webhook.py
	$(PY) bench/predictor.py

clean:
	rm -rf $(VENV) .pytest_cache out guardgrid/_kernel*.so
