# Doorstep: every command a person needs. `make demo` and `make test` install what is missing
# (Debian packages with apt, a virtualenv in .venv, the project) and then run.

VENV      ?= .venv
PYTHON    ?= python3
APT_PKGS  := mosquitto age ffmpeg systemd chromium chromium-driver
# for the installer's tests: apt's numpy and an extension built against it (the venv must keep
# both working), and debootstrap (the image stage's steps run in a Debian 12 root)
APT_PKGS  += python3-numpy python3-bottleneck debootstrap
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# On Raspberry Pi OS, picamera2 comes from apt (python3-picamera2): let the venv see it.
VENV_OPTS := $(shell [ -d /usr/lib/python3/dist-packages/picamera2 ] && echo --system-site-packages)
STAMP     := $(VENV)/.doorstep-installed

.PHONY: setup demo test lint bench bench-quick screenshots clean image-stage wheel

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@missing=""; \
	for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "== installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV_OPTS) $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

demo: setup
	$(VENV)/bin/doorstep demo --serve --out $(or $(OUT),demo-out/$(shell date +%Y%m%d-%H%M%S))

screenshots: setup
	$(VENV)/bin/python -m tests.owner.hub.screenshots docs

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python tools/mypy_view.py
	cd .mypy-view && $(abspath $(VENV))/bin/mypy --config-file ../setup.cfg --cache-dir ../.mypy_cache -p doorstep

test: lint
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

# Doorstep's wheel: what `doorstep install` installs and `doorstep bundle` signs
wheel: setup
	$(VENV)/bin/pip wheel -q --no-deps -w dist .

# the pi-gen stage's input: exactly one wheel in its files/ (image/pi-gen/README.md)
image-stage: setup
	rm -f image/pi-gen/stage-doorstep/02-doorstep/files/*.whl
	$(VENV)/bin/pip wheel -q --no-deps -w image/pi-gen/stage-doorstep/02-doorstep/files .

bench: setup
	$(VENV)/bin/doorstep bench

bench-quick: setup
	$(VENV)/bin/doorstep bench --quick

clean:
	rm -rf $(VENV) demo-out dist .pytest_cache .mypy_cache .mypy-view .ruff_cache
