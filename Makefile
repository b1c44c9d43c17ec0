# runbox: run a stage, run the tests, clean up.  Run as root.
#
#   make stage3 CMD="sh -c 'hostname; echo \$$\$$'"   a container of stage 3
#   make test                                       the test suite
#
# Every target sets up what it needs first: apt packages, the venv, the
# default rootfs.  Images and container state live under RUNBOX_ROOT, never
# in the repository.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export RUNBOX_ROOT ?= /var/lib/runbox
CMD ?= sh
OPTS ?=
ROOTFS := $(RUNBOX_ROOT)/images/busybox/rootfs
# Debian packages the tests use: strace to check the narration, gcc and
# libc6-dev to build the static probe programs.
TEST_PACKAGES := strace gcc libc6-dev

.PHONY: all venv rootfs stage1 stage2 stage3 stage4 stage5 test test-host \
	test-v2 test-deps lab clean distclean bench doctor diff

all: rootfs

# Calls the venv's interpreter directly: on some machines python3 on PATH is
# a slow shim.  The editable install is the plain .pth kind ("compat"): the
# newer kind imports a finder at every start, about 15 ms.
venv: $(PY)
$(PY): pyproject.toml
	@$(PYTHON) -c "import ensurepip" >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -e '.[test,notebooks]' \
	  --config-settings editable_mode=compat
	@touch $(PY)

rootfs: $(ROOTFS)
$(ROOTFS): | $(PY)
	$(PY) -m runbox.images busybox

# $(value ...) keeps a $$ meant for the container's shell as it was typed.
stage1: | $(PY)
	@$(PY) stages/01_fork_exec $(value OPTS) $(value CMD)
stage2: | $(PY)
	@$(PY) stages/02_namespaces $(value OPTS) $(value CMD)
stage3: $(ROOTFS) | $(PY)
	@$(PY) stages/03_pivot_root $(value OPTS) $(value CMD)
stage4: $(ROOTFS) | $(PY)
	@$(PY) stages/04_cgroups $(value OPTS) $(value CMD)
stage5: $(ROOTFS) | $(PY)
	@$(PY) stages/05_security $(value OPTS) $(value CMD)

test-deps:
	@missing=$$(for p in $(TEST_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
	  grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && apt-get install -y -qq $$missing; fi

# The suite on this host, then the cgroup tests again in a small VM with a
# pure cgroup v2 kernel (vm/README.md): hosts are v1, hybrid or v2, and
# runbox must be right on each.
test: test-host test-v2

test-host: test-deps $(ROOTFS) | $(PY)
	$(PY) -m pytest

V2_TESTS ?= tests/test_vm_harness.py tests/test_cgroups.py tests/test_cgroups_v2.py
test-v2: $(ROOTFS) | $(PY)
	vm/run-tests -q $(V2_TESTS)

# Start-up time and memory beside runc and crun (bench/run.py says what
# differs); writes bench/results.json.  Not part of the tests.
bench: $(ROOTFS) | $(PY)
	$(PY) bench/run.py

# The escape lab: the default image plus the probe programs under /lab.
lab: $(ROOTFS) test-deps | $(PY)
	$(PY) -m runbox.lab

# The notebooks in JupyterLab, for people (make test runs them headless,
# without it).  Jupyter refuses root unless told.  It listens on localhost
# only: from outside a VM, forward the port (ssh -L 8888:localhost:8888).
NOTEBOOK_OPTS ?= --no-browser
JUPYTER_LAB := $(VENV)/bin/jupyter-lab
.PHONY: notebook
notebook: $(ROOTFS) test-deps | $(JUPYTER_LAB)
	$(JUPYTER_LAB) --allow-root --notebook-dir=notebooks $(NOTEBOOK_OPTS)
$(JUPYTER_LAB): pyproject.toml | $(PY)
	$(PY) -m pip install -qq -e '.[jupyter]'
	@touch $@

# Can this machine run the stages?  A check per need, and how to fix each.
doctor: | $(PY)
	@$(PY) -m runbox.doctor

# The lesson of stage N as a diff: what its __main__.py changes from the
# stage before it.  git pages and colours it when it can.
diff:
	@old=$$(ls -d stages/0$$(( $(or $(STAGE),0) - 1 ))_* 2>/dev/null); \
	new=$$(ls -d stages/0$(STAGE)_* 2>/dev/null); \
	if [ -z "$$old" ] || [ -z "$$new" ]; then \
	  echo "usage: make diff STAGE=N, N from 2 to" \
	    "$$(ls -d stages/0*_* | wc -l)" >&2; exit 2; fi; \
	if command -v git >/dev/null; then \
	  git diff --no-index --diff-algorithm=histogram --color=auto \
	    "$$old/__main__.py" "$$new/__main__.py"; \
	else diff -u --label "$$old" --label "$$new" \
	  "$$old/__main__.py" "$$new/__main__.py"; fi; [ $$? -le 1 ]

# Removes only runbox's own leftovers: state of containers whose runbox has
# died.  Images stay; `make distclean` removes them and the venv too.
clean:
	@if [ -x $(PY) ]; then $(PY) -m runbox.container gc; fi
	rm -rf .pytest_cache build *.egg-info

distclean: clean
	rm -rf $(VENV) $(RUNBOX_ROOT)/images
