# Set-up and the two everyday commands. Both create .venv on first use.
# torch/torchvision are installed first, pinned, with plain pip (it uses the local wheel cache).
# quantus (tests only) goes in with --no-deps: it asks for opencv-python, which must never sit
# beside opencv-python-headless; its other needs are in the test extra (pyproject.toml).
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test bench clean

# what a run needs (the demo); the tests' extras come on top, when the tests first run
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps quantus==0.6.0
	touch $@

demo: $(VENV)/.installed
	$(PY) -m explain configs/demo_catdog.yaml

# the suite on every core (at most 4), a test file per worker: one torch thread each (conftest);
# the longest files first, in conftest's order (xdist would order files by their test count).
# Bytecode is cached even where the environment says PYTHONDONTWRITEBYTECODE: without it each
# worker rewrites every test file's asserts (16 s of collection, 7.5 s with the cache) and each
# child process compiles explain again.
test: $(VENV)/.installed-test
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

bench: $(VENV)/.installed-test
	$(PY) benchmarks/channel_grid.py
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/report_build.py
	$(PY) benchmarks/end_to_end.py

clean:
	rm -rf $(VENV) results/*/
