# kfn — developer entry points. `make run` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KFN := $(VENV)/bin/kfn
PYTEST_ARGS ?=

.PHONY: help venv test unit crds chart run stop cluster-up cluster-down images bench clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

venv: $(VENV)/.installed ## create the virtual environment with kfn and its test dependencies

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "make venv: kfn needs Python 3.11 or newer as $(PYTHON) (found: $$($(PYTHON) -V 2>&1))"; exit 1; }
	@# a fresh Debian-family machine lacks python3-venv: testbed/deps.sh installs it (as root) with the test bed's
	@# packages, or names what to install in one sentence
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || bash testbed/deps.sh
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "make venv: $(PYTHON) cannot create virtual environments: install python3-venv (apt-get install python3-venv)"; exit 1; }
	@echo "==> creating $(VENV) and installing kfn[test] (boto3, the aws CLI, pytest …; a minute or two the first time)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install --progress-bar off -e '.[test]' | grep --line-buffered -E '^(Collecting|Successfully)' || true
	@$(PY) -c 'import kfn, boto3' || { echo "make venv: installing kfn[test] failed"; exit 1; }
	@touch $@

# The suite mostly waits on pods, so most of it runs on TEST_WORKERS pytest-xdist workers (a test file stays on one
# worker; the files that install kfn cluster-wide share one worker: tests/conftest.py). Then, one at a time, the
# files that need the node's CPU alone (node_exclusive) and last the tests that kill or take down the test bed.
# TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: venv ## run every test: unit, integration and end-to-end (brings up the test bed as needed)
	@set +e; \
	  if [ "$(TEST_WORKERS)" = 0 ]; then $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc; fi; \
	  echo "==> the suite on $(TEST_WORKERS) workers, except the tests that need the node alone or take it down"; \
	  $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not testbed_destructive and not node_exclusive" \
	    $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; \
	  echo "==> one at a time: the tests that need the node's CPU alone, then those that kill or take down the test bed"; \
	  $(PY) -m pytest -m "node_exclusive or testbed_destructive" $(PYTEST_ARGS); rc2=$$?; [ $$rc2 -eq 5 ] && rc2=0; \
	  [ $$rc -ne 0 ] && exit $$rc; exit $$rc2

unit: venv ## run the fast unit tests only
	@set +e; $(PY) -m pytest tests/unit $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

crds: venv ## regenerate crds/ and the chart's generated files (charts/kfn/files/) from the pydantic models
	$(KFN) crds --write crds --write charts/kfn/files/crds
	$(PY) -m kfn.chartgen --write charts/kfn/files

HELM_RENDER = template kfn charts/kfn --namespace kfn-system --kube-version 1.35.4
chart: venv ## render the plain manifests and the Argo CD snippet from charts/kfn (helm built into the test-bed cache)
	@helm=$$(bash testbed/build-tools.sh helm); set -e; \
	  $$helm lint --strict charts/kfn; \
	  $$helm $(HELM_RENDER) --set createNamespace=true > charts/kfn/manifests/kfn.yaml; \
	  cp charts/kfn/manifests/kfn.yaml operator/kfn/manifests/kfn.yaml; \
	  $$helm $(HELM_RENDER) --set argocd.healthChecks.enabled=true --show-only templates/argocd-health.yaml \
	    > charts/kfn/argocd/argocd-cm.yaml; \
	  echo "wrote charts/kfn/manifests/kfn.yaml (and its copy kfn install prints, operator/kfn/manifests/kfn.yaml) charts/kfn/argocd/argocd-cm.yaml"

CONTROL_PLANE_ONLY ?= 0
cluster-up: ## start the test bed (a single-node Kubernetes; CONTROL_PLANE_ONLY=1: API server only, seconds)
	@CONTROL_PLANE_ONLY=$(CONTROL_PLANE_ONLY) bash testbed/up.sh

cluster-down: ## stop the test bed and remove everything it made (built binaries and images stay cached)
	@bash testbed/down.sh

images: venv ## build kfn's container images without a registry and load them into the test bed
	@bash testbed/images.sh

run: ## bring up the local cluster, build kfn's images, helm install kfn, deploy the hello-world example and invoke it
	@export KFN_RUN_START=$$(date +%s); set -e; \
	  $(MAKE) --no-print-directory venv; \
	  $(MAKE) --no-print-directory cluster-up; \
	  $(MAKE) --no-print-directory images; \
	  VENV=$(VENV) bash testbed/kfn-run.sh run

stop: ## undo make run: the example and the helm release (the test bed stays: make cluster-down)
	@VENV=$(VENV) bash testbed/kfn-run.sh stop

BENCH_N ?= 1000
bench: venv ## benchmarks as ratios against a baseline run alongside: agent vs AWS's emulator, operator vs raw kubectl apply, gateway vs direct and nginx, async vs plain JetStream
	@echo "==> agent vs AWS Runtime Interface Emulator"
	$(PY) bench/agent_vs_rie.py
	@echo "==> reconciling $(BENCH_N) Functions vs raw kubectl apply of their children"
	$(PY) bench/reconcile.py --n $(BENCH_N)
	@echo "==> gateway hop vs direct-to-agent vs nginx on one function pod; cold start vs raw pod start"
	$(PY) bench/gateway.py
	@echo "==> scaler: 0 -> N ready environments vs a raw Deployment, burst -> decision, first invoke from zero"
	$(PY) bench/scaler.py
	@echo "==> async invocation (Event → NATS JetStream → worker → function) vs a plain JetStream publish/consume loop"
	$(PY) bench/async.py
	@echo "==> Redis Streams and Kafka event source mappings (poller pod → gateway → function) vs redis-py and aiokafka consumers; iterator age under a steady load"
	$(PY) bench/esm.py
	@echo; echo "==> summary (bench/results/*.json)"
	@$(PY) bench/summary.py

clean:
	rm -rf $(VENV) .pytest_cache
