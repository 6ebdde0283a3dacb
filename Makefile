# faultprint: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROTOS := $(wildcard protos/faultprint/v1/*.proto)
STUBS := protos/faultprint/v1/probe_service_pb2.py
NATIVE_LOAD := build/native/load_generator
WITH_REDIS := scripts/with-redis.sh

.PHONY: setup protos docs native-load demo test test-unit test-integration test-e2e lint buf-lint bench bench-quick bench-swap bench-profile bench-ceiling bench-index bench-baseline bench-minutes bench-gpu clean

setup: $(VENV)/.linked $(STUBS)

# The stubs must exist before the editable install, which maps faultprint.v1 onto protos/.
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "grpcio-tools>=1.66,<2" "setuptools>=69"
	$(MAKE) --no-print-directory protos
	$(PY) -m pip install -q -e '.[dev,trainer]'
	touch $@

# The dev install links each package's files into one faultprint tree (setuptools' strict
# editable mode), which mypy and editors can read; a module added to a package folder is
# linked on the next make.
PACKAGE_DIRS := $(sort $(dir $(wildcard server/*.py server/*/*.py client/*.py trainer/*.py encoder/*.py \
	registry/*.py traffic/*.py protos/faultprint/*.py protos/faultprint/v1/*.py)))
$(VENV)/.linked: $(VENV)/.installed $(STUBS) $(PACKAGE_DIRS)
	$(PY) -m pip install -q --no-deps --config-settings editable_mode=strict -e .
	touch $@

protos: $(STUBS)

# The settings table of docs/configuration.md, generated from the options' declarations, and
# the statistics table of docs/data-contract.md, from the data contract (traffic/contract.py).
docs: setup
	$(PY) -c "import pathlib; from faultprint.server.settings import with_options_table as w; \
	p = pathlib.Path('docs/configuration.md'); p.write_text(w(p.read_text()))"
	$(PY) -c "import pathlib; from faultprint.traffic.contract import with_contract_table as w; \
	p = pathlib.Path('docs/data-contract.md'); p.write_text(w(p.read_text()))"

$(STUBS): $(PROTOS) setup.py
	$(PY) -c "import setup; setup.generate_stubs()"

# The closed-loop load generator in C++, so that simulated probes take little of the CPU the
# server under test shares with them (benchmarks/native/load_generator.cc).
native-load: $(NATIVE_LOAD)

$(NATIVE_LOAD): benchmarks/native/load_generator.cc $(PROTOS) scripts/build-native-load.sh
	scripts/build-native-load.sh

demo: setup
	$(WITH_REDIS) $(PY) scripts/demo.py

test: setup $(NATIVE_LOAD)
	$(WITH_REDIS) $(PY) -m pytest -q

test-unit: setup
	$(PY) -m pytest -q tests/unit

test-integration: setup $(NATIVE_LOAD)
	$(WITH_REDIS) $(PY) -m pytest -q tests/integration

test-e2e: setup
	$(WITH_REDIS) $(PY) -m pytest -q tests/e2e

lint: setup buf-lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy server client trainer encoder registry traffic

# buf comes from npm; skipped with a note where npm is missing.
buf-lint:
	@if command -v npx >/dev/null; then npx --yes @bufbuild/buf@1.75.0 lint; \
	else echo "buf-lint: npx not found; install Node.js to lint the protos"; fi

# The benchmark suite needs the bench extra (matplotlib, py-spy) on top of the dev install.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,trainer,bench]'
	touch $@

# About 15 minutes: ceiling, load at C = 1..256, naive baseline, 60 s overload, both encoders.
bench: setup $(VENV)/.bench-installed $(NATIVE_LOAD)
	$(WITH_REDIS) $(PY) -m benchmarks.suite

# Under 3 minutes: a smoke run of the same suite.
bench-quick: setup $(VENV)/.bench-installed $(NATIVE_LOAD)
	$(WITH_REDIS) $(PY) -m benchmarks.suite --quick

# A model promoted under sustained probe load, both encoders (about 3 minutes).
bench-swap: setup $(VENV)/.bench-installed
	$(WITH_REDIS) $(PY) -m benchmarks.swap

# Where the server's time goes: py-spy over a server under streaming load (small encoder).
bench-profile: setup $(VENV)/.bench-installed $(NATIVE_LOAD)
	$(WITH_REDIS) $(PY) -m benchmarks.profile

# The encoder alone at the common batch sizes.
bench-ceiling: setup
	$(PY) -m benchmarks.ceiling

# GPU proof in under 8 minutes: cuDNN check, batch 256-1024 ceilings, C = 64 and 256 (CPU: a rehearsal).
bench-gpu: setup
	$(WITH_REDIS) $(PY) -m benchmarks.gpu_proof

# Indexing a network of 1,000 to 50,000 reference cases from Redis, and matching against it.
bench-index: setup
	$(WITH_REDIS) $(PY) -m benchmarks.index_build

# Reading a batch against its networks' baselines, beside the transfer encoder it feeds.
bench-baseline: setup
	$(PY) -m benchmarks.baseline_cost

# What a streamed node-minute costs: server CPU beside a bare grpc.aio reader, and wire bytes
# against a window per call (benchmarks/results/minute-cost.json; about 1 minute).
bench-minutes: setup
	$(WITH_REDIS) $(PY) -m benchmarks.minute_streams cost

clean:
	rm -rf $(VENV) build artifacts protos/faultprint/v1/*_pb2* .demo .pytest_cache .ruff_cache .mypy_cache *.egg-info
