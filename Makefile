# aios-lab: one command sets up and runs the main job, one runs the tests.
#   make demo   - install what is needed, build, boot the VM; collect with mllb, train, deploy, compare
#   make test   - install what is needed, build, run every test tier
# Both work on a fresh Debian 12 machine with nothing installed beforehand.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
AIOS := $(VENV)/bin/aios-lab
# clang-19: the kernel's example schedulers (aios-lab build --upstream) need clang >= 16.
APT_PACKAGES := qemu-system-x86 clang-14 llvm-14 bpftool libbpf-dev libelf-dev kmod zstd busybox-static \
                rt-tests gcc make clang-19 zlib1g-dev
STAMP_APT := $(VENV)/.apt-done
STAMP_PIP := $(VENV)/.pip-done

.PHONY: setup build demo test lint test-unit test-bpf test-vm clean

setup: $(STAMP_PIP)

$(STAMP_APT): Makefile
	@mkdir -p $(VENV)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@touch $@

$(STAMP_PIP): $(STAMP_APT) pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,ray]'
	@touch $@

build: setup
	$(AIOS) build --upstream

demo: build
	$(AIOS) demo

# Tiers: unit (no root), bpf (host kernel), vm (boots the sched_ext kernel;
# the guest tier runs inside one boot).
test: build lint
	$(PY) -m pytest -q

# pyflakes' rules and syntax errors ([tool.ruff.lint] in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

test-unit: build
	$(PY) -m pytest -q -m "not bpf and not vm and not guest"

test-bpf: build
	$(PY) -m pytest -q -m bpf

test-vm: build
	$(PY) -m pytest -q -m vm

clean:
	rm -rf build
