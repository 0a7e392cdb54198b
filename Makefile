# kfn — developer entry points. `make run` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KFN := $(VENV)/bin/kfn
PYTEST_ARGS ?=

.PHONY: help venv test unit crds run cluster-up cluster-down images bench clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

venv: $(VENV)/.installed ## create the virtual environment with kfn and its test dependencies

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "make venv: kfn needs Python 3.11 or newer as $(PYTHON) (found: $$($(PYTHON) -V 2>&1))"; exit 1; }
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "make venv: $(PYTHON) cannot create virtual environments: install python3-venv (apt-get install python3-venv)"; exit 1; }
	@echo "==> creating $(VENV) and installing kfn[test]"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

test: venv ## run every test: unit, integration and end-to-end (brings up the test bed as needed)
	@set +e; $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

unit: venv ## run the fast unit tests only
	@set +e; $(PY) -m pytest tests/unit $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

crds: venv ## regenerate crds/ and charts/kfn/crds/ from the pydantic models
	$(KFN) crds --write crds --write charts/kfn/crds

CONTROL_PLANE_ONLY ?= 0
cluster-up: ## start the test bed (a single-node Kubernetes; CONTROL_PLANE_ONLY=1: API server only, seconds)
	@CONTROL_PLANE_ONLY=$(CONTROL_PLANE_ONLY) bash testbed/up.sh

cluster-down: ## stop the test bed and remove everything it made (built binaries and images stay cached)
	@bash testbed/down.sh

images: venv ## build kfn's container images without a registry and load them into the test bed
	@bash testbed/images.sh

KUBECTL_BIN = $$(bash testbed/env.sh print | sed -n 's/^KUBECTL=//p')
KUBECONFIG_TB = $$(bash testbed/env.sh print | sed -n 's/^KUBECONFIG_PATH=//p')
run: venv ## bring up the local cluster, install kfn, deploy the hello-world example and invoke it
	@$(MAKE) --no-print-directory cluster-up
	@$(MAKE) --no-print-directory images
	@export KUBECONFIG=$(KUBECONFIG_TB); kubectl=$(KUBECTL_BIN); set -e; \
	  echo "==> installing kfn (CRDs, RBAC, operator in kfn-system)"; \
	  $(KFN) install --apply; \
	  $$kubectl -n kfn-system rollout status deploy/kfn-operator --timeout=180s; \
	  echo "==> deploying examples/hello-world.yaml"; \
	  $$kubectl apply -f examples/hello-world.yaml; \
	  echo "==> waiting for an execution environment of hello to be up (images are local: nothing to pull)"; \
	  $$kubectl wait --for=condition=Ready function/hello --timeout=300s; \
	  $$kubectl wait --for=condition=Available function/hello --timeout=300s; \
	  $$kubectl get kfn; \
	  echo "==> kfn invoke hello --payload '{\"name\": \"kfn\"}' --log-type Tail"; \
	  $(KFN) invoke hello --payload '{"name": "kfn"}' --log-type Tail; \
	  echo; echo "kfn is running. Try:  export KUBECONFIG=$$KUBECONFIG; $(KFN) invoke hello -p '{}'"

BENCH_N ?= 1000
bench: venv ## benchmarks as ratios against a baseline run alongside: agent vs AWS's emulator, operator vs raw kubectl apply
	@echo "==> agent vs AWS Runtime Interface Emulator"
	$(PY) bench/agent_vs_rie.py
	@echo "==> reconciling $(BENCH_N) Functions vs raw kubectl apply of their children"
	$(PY) bench/reconcile.py --n $(BENCH_N)
	@echo; echo "==> summary (bench/results/*.json)"
	@$(PY) bench/summary.py

clean:
	rm -rf $(VENV) .pytest_cache
