# Two commands do everything on a fresh clone: `make run` and `make test`.
# Both first run `make setup` (a no-op once the environment is complete).
#
#   PYTHON=python3.11       interpreter used to create .venv (default: python3)
#   VENV=/path/to/venv      where the environment lives (default: the active one, else ./.venv)
#   TORCH_SPEC="torch==... torchvision==..."   PyTorch to install into a new environment
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cu121    e.g. for a given CUDA build
#   CONSTRAINTS=file        pip constraints of the install (default: constraints.txt, the exact
#                           versions the suite passed with); CONSTRAINTS= installs without any
#   PYTEST_ARGS="-k deform"  extra pytest arguments

PYTHON ?= python3
ENV_PYTHON = $(shell $(PYTHON) tools/setup_env.py --print-python)
PYTEST_ARGS ?=
RUN_CONFIG ?= configs/toy/pointrend.yaml
RUN_OUTPUT ?= output/run

.PHONY: setup test test-unit test-integration test-slow run lint clean help

help:
	@echo "make setup      create/repair the environment (.venv or the active one)"
	@echo "make run        train + evaluate + draw predictions on the bundled toy data"
	@echo "make test       the whole test suite (what CI runs), learning tests included"
	@echo "make test-unit  the quick tests (no learning checks, no integration checks)"
	@echo "make test-integration  the integration checks (per toy config, subprocesses)"
	@echo "make test-slow  only the slow learning tests"
	@echo "make lint       flake8, isort, black checks (make test runs them too: tests/test_lint.py)"
	@echo ""
	@echo "make setup CONSTRAINTS=       install without constraints.txt's exact versions"
	@echo "make setup CONSTRAINTS=file   install with another constraints file"

setup:
	@$(PYTHON) tools/setup_env.py

test: setup
	$(ENV_PYTHON) -m pytest tests $(PYTEST_ARGS)

test-unit: setup
	$(ENV_PYTHON) -m pytest tests -m "not slow and not integration" $(PYTEST_ARGS)

test-integration: setup
	$(ENV_PYTHON) -m pytest tests -m integration $(PYTEST_ARGS)

test-slow: setup
	$(ENV_PYTHON) -m pytest tests -m slow $(PYTEST_ARGS)

run: setup
	$(ENV_PYTHON) train_net.py --config-file $(RUN_CONFIG) OUTPUT_DIR $(RUN_OUTPUT)
	$(ENV_PYTHON) demo.py --config-file $(RUN_CONFIG) --input $${DETECTRON2_DATASETS:-datasets}/toy_instance/val/images \
		--output $(RUN_OUTPUT)/demo --max-inputs 8 --opts MODEL.WEIGHTS $(RUN_OUTPUT)/model_final.pth

# The paths and commands are tools/lint.py's, which tests/test_lint.py runs too.
lint: setup
	$(ENV_PYTHON) tools/lint.py

clean:
	rm -rf output .pytest_cache
