# On a GPU node, choose your CUDA build of torch: make install TORCH="torch==2.13.0 --index-url <your CUDA index>"
TORCH ?= torch==2.13.0
PYTHON ?= python

.PHONY: install test run
install:
	$(PYTHON) -m pip install $(TORCH)
	# fastmri declares torchvision, which we never need (and which breaks a CPU torch): no deps.
	$(PYTHON) -m pip install --no-deps fastmri==0.3.0
	$(PYTHON) -m pip install -e ".[mri,ct,slurm,dev]"

test:
	$(PYTHON) -m pytest -q

run:
	$(PYTHON) train.py
