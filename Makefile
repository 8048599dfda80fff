# Two commands a user needs: `make demo` and `make test`. Everything else they call.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
PIP   := $(VENV)/bin/pip
PORT  ?= 8000
VENDOR_DIR := src/livedash/web/static/vendor
VENDOR := $(VENDOR_DIR)/socket.io.min.js $(VENDOR_DIR)/uPlot.iife.min.js \
	$(VENDOR_DIR)/uPlot.min.css $(VENDOR_DIR)/swagger-ui-bundle.js $(VENDOR_DIR)/swagger-ui.css

.PHONY: demo test lint typecheck check system-deps clean

# Python caches each module's compiled form (__pycache__, ignored by git) unless
# PYTHONDONTWRITEBYTECODE is set, as it is in many containers. Set, every process compiles
# livedash from source again: each `livedash serve` spent 0.3-0.9 s of its start on it
# (bench/startup.py), and pytest collected the suite in 10-12 s instead of 4-5. These commands
# start hundreds of such processes, so they let Python keep what it compiles.
unexport PYTHONDONTWRITEBYTECODE

demo: $(VENV)/.installed $(VENDOR)
	$(VENV)/bin/livedash demo --port $(PORT)

test: $(VENV)/.installed-dev $(VENDOR) system-deps
	$(PY) -m pytest -n auto --dist worksteal --cov=livedash --cov-report=term --cov-report=xml -q

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/ruff check src tests bench

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy src

check: lint typecheck test

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

# The browser's packages, from package-lock.json. No install script runs: none is needed, and
# swagger-ui-dist's dependency @scarf/scarf would report the installation to its makers.
node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --ignore-scripts --silent
	touch $@

$(VENDOR_DIR)/socket.io.min.js: node_modules/.installed
	mkdir -p $(@D)
	cp node_modules/socket.io-client/dist/$(@F) $@

$(VENDOR_DIR)/uPlot.iife.min.js $(VENDOR_DIR)/uPlot.min.css: node_modules/.installed
	mkdir -p $(@D)
	cp node_modules/uplot/dist/$(@F) $@

# Swagger UI for /docs, served from here: the page's CSP allows no script from a CDN.
$(VENDOR_DIR)/swagger-ui-bundle.js $(VENDOR_DIR)/swagger-ui.css: node_modules/.installed
	mkdir -p $(@D)
	cp node_modules/swagger-ui-dist/$(@F) $@

# Debian's servers and browser for the tests that use the real things; installed when
# missing and we are root, otherwise the one apt-get line is printed. promtool (package
# prometheus) and docker-compose check deploy/ (tests/test_deploy.py); they come without their
# recommends (a node exporter, the Docker daemon), which nothing here uses.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v firefox-esr >/dev/null || missing="$$missing firefox-esr"; \
	command -v sqlite3 >/dev/null || missing="$$missing sqlite3"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v pdftotext >/dev/null || missing="$$missing poppler-utils"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	ls /usr/lib/postgresql/*/lib/wal2json.so >/dev/null 2>&1 || missing="$$missing postgresql-wal2json"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      $$(echo $$missing | sed -E 's/postgresql-wal2json|prometheus|docker-compose//g') >/dev/null; \
	    tools=$$(echo $$missing | grep -oE 'prometheus|docker-compose' | tr '\n' ' '); \
	    [ -z "$$tools" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $$tools >/dev/null; \
	    case "$$missing" in *wal2json*) \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	        postgresql-$$(ls /usr/lib/postgresql | sort -n | tail -1)-wal2json >/dev/null;; esac; \
	  else \
	    echo "Missing system packages. Run: sudo apt-get install -y$$missing" \
	      | sed "s/postgresql-wal2json/postgresql-$$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)-wal2json/"; exit 1; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) node_modules $(VENDOR) .coverage coverage.xml
