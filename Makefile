# layertour — the two commands a new user runs:
#   make demo   set up a virtual environment and run the demo (train a small CNN on digits,
#               record its layers, embed, align, write a bundle, then view or render it)
#   make test   set up the environment (plus the system packages for headless OpenGL when root)
#               and run the whole test suite under a virtual display
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Extras each target needs; the GPU stack is opt-in: make gpu-env (see README).
DEMO_EXTRAS := cpu,viewer
TEST_EXTRAS := cpu,viewer,notebook,dask,dev
XVFB_ARGS := -a -s "-screen 0 1280x1024x24 +extension GLX +render -noreset"
# fonts-dejavu-core: the HUD's text; chromium + chromium-driver: the notebook widget's browser test;
# libosmesa6: the widget's OSMesa fallback
APT_PKGS := xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libegl-mesa0 libx11-6 fonts-dejavu-core \
            chromium chromium-driver libosmesa6

.PHONY: demo test lint env-demo env-test system-deps gpu-env bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.demo-stamp: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[$(DEMO_EXTRAS)]"
	touch $@

$(VENV)/.test-stamp: pyproject.toml | $(PY)
	$(PIP) install -q -e ".[$(TEST_EXTRAS)]"
	touch $@

env-demo: $(VENV)/.demo-stamp
env-test: $(VENV)/.test-stamp

# Installs the packages headless OpenGL tests need, only when missing and only as root.
system-deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing system packages:$$missing (run as root or install them; GL tests will skip)"; fi; \
	fi

demo: env-demo
	@if [ -z "$$DISPLAY" ]; then echo "no display: the demo writes the bundle and renders a GIF of the tour"; fi
	$(VENV)/bin/layertour demo $(DEMO_ARGS)

test: env-test system-deps
	@if command -v xvfb-run >/dev/null 2>&1; then \
	  xvfb-run $(XVFB_ARGS) $(PY) -m pytest $(PYTEST_ARGS); \
	else $(PY) -m pytest $(PYTEST_ARGS); fi

lint: env-test
	$(VENV)/bin/ruff check engine viewer kernels benchmarks tests
	$(VENV)/bin/lint-imports

gpu-env: | $(PY)
	$(PIP) install -e ".[gpu,viewer,dev]"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
