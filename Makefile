# Two commands do all the set-up on a fresh machine by themselves:
#   make demo   - the main job on the embedded synthetic benchmark (outputs in outputs/demo)
#   make test   - the default test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.lavida-installed

.PHONY: venv demo test test-slow lint format info clean

# The venv is rebuilt only when the lock file or pyproject changes.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/lavida-demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -n auto --dist loadfile

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q -m 'slow and not gpu'

# PLW1514 (a text file opened without encoding=) is a preview rule, so it runs on its own: preview mode
# would also change stable rules. Text files are UTF-8 whatever the locale (tests/test_utf8_files.py).
# Its fix, encoding="utf-8", counts as unsafe because it changes what a non-UTF-8 locale reads, which is
# the point: make format applies it.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/ruff check --preview --select PLW1514 .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/ruff check --preview --select PLW1514 --fix --unsafe-fixes .

info: $(STAMP)
	$(BIN)/lavida-info

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
