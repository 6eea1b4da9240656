# make demo  — set up the environment and open the studio (unit explorer) on the bundled model
# make test  — set up the environment, lint, and run the test suite (what CI runs)
# The virtual environment is created once per set of requirements (scripts/venv.sh).
SHELL := /bin/bash
VENV = $(shell bash scripts/venv.sh)

.PHONY: demo render test lint format bench docs

demo:
	@V="$(VENV)" && "$$V/bin/fvis" studio

render:
	@V="$(VENV)" && "$$V/bin/fvis" render --model fvis:mnist --class all --tv 0.05 -o out/classes.png

test:
	@V="$(VENV)" && "$$V/bin/ruff" check . && "$$V/bin/ruff" format --check . \
		&& "$$V/bin/python" -m pytest

lint:
	@V="$(VENV)" && "$$V/bin/ruff" check . && "$$V/bin/ruff" format --check .

format:
	@V="$(VENV)" && "$$V/bin/ruff" check --fix . && "$$V/bin/ruff" format .

# make bench — every benchmark (python -m benchmarks): out/bench/bench.json and bench.md.
# Lucent (torch-lucent) pins an old kornia, so it goes in without its dependencies; the
# benchmark shims what it needs (benchmarks/lucent_compare.py).
bench:
	@V="$(VENV)" && "$$V/bin/pip" install -q --no-deps torch-lucent==0.1.8 \
		&& "$$V/bin/python" -m benchmarks --out out/bench
