# Two commands on a fresh machine (Python 3 and, for the cocotb benches, Icarus/Verilator):
#   make build   generate the Verilog and build it for the default FPGA, print the report
#   make test    run every test (unit, randomized, formal, synthesis smoke test)
# Both create .venv/ and install the pinned tools from PyPI on first use.

VENV    ?= .venv
PYTHON  ?= python3
STAMP   := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
RUN     := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
JOBS    ?= 2
BUILD_ARGS ?=
TEST_ARGS  ?=

.PHONY: build test bench formal install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

build: $(STAMP)
	$(RUN) viommu build --seeds 3 $(BUILD_ARGS)

test: $(STAMP)
	$(RUN) python -m pytest -n $(JOBS) -q -rs $(TEST_ARGS)

bench: $(STAMP)
	$(RUN) viommu bench

formal: $(STAMP)
	$(RUN) python -m pytest -q tests/test_formal.py

clean:
	rm -rf build
