# Two commands on a fresh machine:  make run  (toy workflow end to end)  and  make test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first, as an exact version: a bare `torch` requirement pulls several GB of CUDA
# wheels, while torch==2.13.0 resolves to the local CPU wheel on these machines.
TORCH_SPEC ?= torch==2.13.0
CORES ?= 2

.PHONY: install run test dag clean help

help:
	@echo "make install  create $(VENV), install $(TORCH_SPEC), then hipqeq with all engines and test tools"
	@echo "make run      toy workflow end to end (config/toy.yaml) on $(CORES) cores, then the report"
	@echo "make test     the test suite (pytest)"
	@echo "make dag      draw the production rule graph (results/rulegraph.dot)"

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[all,test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --configfile config/toy.yaml --cores $(CORES)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --configfile config/toy.yaml --cores $(CORES) --report results/report.html
	@echo "results: results/validation/metrics.md, results/validation/parity/*.png, report: results/report.html"

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

dag: $(STAMP)
	mkdir -p results
	$(BIN)/snakemake --rulegraph > results/rulegraph.dot
	@echo "results/rulegraph.dot (render with: dot -Tpng results/rulegraph.dot -o rulegraph.png)"

clean:
	rm -rf results logs .snakemake
