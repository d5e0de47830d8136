# On a GPU node, choose your CUDA build of torch: make install TORCH="torch==2.13.0 --index-url <your CUDA index>"
TORCH ?= torch==2.13.0
PYTHON ?= python

.PHONY: install test test-all lint format run
install:
	$(PYTHON) -m pip install $(TORCH)
	# fastmri declares torchvision, which we never need (and which breaks a CPU torch): no deps.
	$(PYTHON) -m pip install --no-deps fastmri==0.3.0
	$(PYTHON) -m pip install -e ".[mri,ct,slurm,bm3d,dev]"

# The fast tier (tests marked slow left out: compilation, fresh processes, pre-training, SLURM); CI runs test-all.
test:
	$(PYTHON) -m pytest -q -m "not slow" --durations=20

test-all:
	$(PYTHON) -m pytest -q --durations=30

# ruff (rules in pyproject.toml): lint and formatting, as CI checks them; `make format` rewrites.
lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

run:
	$(PYTHON) train.py
