# Two commands do everything on a fresh machine with only Python 3.11:
#   make run    migrate, load demo data, start web + worker + beat (Ctrl-C or SIGTERM stops all)
#   make test   lint, type-check and run the whole test suite
# With DATABASE_URL / REDIS_URL unset, both start an embedded PostgreSQL and Redis.

PYTHON_BOOTSTRAP ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# Run as a script, not `-m config.embedded`: importing the config package would load the
# Celery app, which picks a default settings module for every child process.
EMBEDDED := $(PYTHON) config/embedded.py
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: run test lint bench install clean

$(VENV)/.installed: requirements/base.txt requirements/dev.txt
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	touch $@

install: $(VENV)/.installed

# `exec`: the recipe's shell becomes the launcher, so the SIGTERM make passes on when it is
# told to stop (not only Ctrl-C, which reaches every process) stops web, worker, beat and the
# embedded servers instead of leaving them running.
run: install
	exec env DJANGO_SETTINGS_MODULE=config.settings.development $(EMBEDDED) sh -c '\
		python manage.py migrate --noinput -v0 && \
		python manage.py collectstatic --noinput -v0 && \
		python manage.py seed_demo && \
		exec honcho -f config/Procfile -d . start'

lint: install
	ruff check .
	ruff format --check .
	mypy

test: lint
	$(EMBEDDED) python -m pytest $(PYTEST_ARGS)

# make bench            all benchmarks
# make bench BENCH=x    only tests/bench/bench_x.py
bench: install
	$(EMBEDDED) python -m tests.bench $(BENCH)

clean:
	rm -rf $(VENV) .data .mypy_cache .pytest_cache .ruff_cache
