# dolfinx_nn: one command sets up and runs the main job, one runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
MPIEXEC := $(VENV)/bin/mpiexec
NP ?= 2
OUT ?= results
PYTEST_ARGS ?=
# one thread per process: tests and MPI runs use one rank per core
export OMP_NUM_THREADS ?= 1

# the bridge's tests also run on an odd number of ranks (as DOLFINx's own CI does)
BRIDGE_TESTS := tests/test_bridge_*.py tests/test_neural_operator.py tests/test_neural_operator_errors.py

.PHONY: setup demo lint test test-serial test-mpi test-mpi3 bench readme-numbers clean

$(PY):
	./scripts/bootstrap.sh

setup: ## create .venv (finds Python >= 3.12) and install dolfinx_nn with DOLFINx and torch
	./scripts/bootstrap.sh

demo: $(PY) ## the main job: learn a PDE coefficient with a network prior
	$(VENV)/bin/dolfinx-nn inverse --dim 2 --prior both --noise 0.01 --out $(OUT)/inverse

test: lint test-serial test-mpi test-mpi3 ## lint, then the whole suite: serial, under mpiexec -n $(NP), bridge on 3

lint: $(PY) ## ruff and mypy, as configured in pyproject.toml
	$(VENV)/bin/ruff check dolfinx_nn tests demos
	$(VENV)/bin/mypy dolfinx_nn

test-serial: $(PY)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-mpi: $(PY)
	$(MPIEXEC) -n $(NP) $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-mpi3: $(PY)
	$(MPIEXEC) -n 3 $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) $(BRIDGE_TESTS)

bench: $(PY) ## benchmarks of the bridge on 1 and 2 ranks (installs the dolfinx-adjoint peer)
	WITH_PEERS=1 ./scripts/bootstrap.sh
	$(VENV)/bin/dolfinx-nn bench bridge --out $(OUT)/BENCH_bridge_np1.json
	$(MPIEXEC) -n 2 $(VENV)/bin/dolfinx-nn bench bridge --out $(OUT)/BENCH_bridge_np2.json

readme-numbers: $(PY) ## rerun the commands behind README.md's measured numbers and rewrite them
	$(PY) scripts/readme_numbers.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
