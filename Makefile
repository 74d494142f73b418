# Veilstop: `make run` starts the whole system, `make test` runs the tests.
# With DATABASE_URL / REDIS_URL unset both use an embedded PostgreSQL and Redis
# under .state/ (see config/embedded.py); set them to use your own servers.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run test lint format stop status venv browser-deps

venv: $(INSTALLED)

$(INSTALLED): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

run: venv
	$(PY) -m config.embedded run -- sh scripts/start.sh

test: venv browser-deps
	DJANGO_ENV=test $(PY) -m config.embedded run -- $(PY) -m pytest $(PYTEST_ARGS)

# The console's browser tests drive Debian's chromium through chromedriver. Installed
# here only when missing and we can (root with apt-get); otherwise nothing happens and
# those tests skip, saying why. Their accessibility check runs axe-core, pinned in
# tests/a11y/package-lock.json: installed with npm when npm is there (else that test skips).
browser-deps:
	@if command -v npm >/dev/null 2>&1 && [ ! -f tests/a11y/node_modules/axe-core/axe.min.js ]; then \
		npm ci --prefix tests/a11y --no-audit --no-fund --loglevel=error || \
		echo "could not install axe-core: the accessibility test will skip" >&2; \
	fi
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then exit 0; fi; \
	echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	log=$$(mktemp); \
	if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >"$$log" 2>&1; then \
		tail -n 20 "$$log" >&2; echo "could not install chromium: the browser tests will skip" >&2; \
	fi; \
	rm -f "$$log"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

stop: venv
	$(PY) -m config.embedded stop

status: venv
	$(PY) -m config.embedded status

# Breach-scanner benchmarks (bench/): their own database and Redis db on the same
# servers as the tests. BENCH_ARGS="--sizes 1000,10000", "--quick", "--only latency", ...
BENCH_ARGS ?=

.PHONY: bench
bench: venv
	DJANGO_ENV=test $(PY) -m config.embedded run -- $(PY) bench/scanner_bench.py $(BENCH_ARGS)

# EA requests under gunicorn (as config/gunicorn.py sets it up) next to a bare DRF endpoint:
# max req/s with wrk, p50/p99 at 300 req/s. BENCH_ARGS="--duration 5", "--only poll", ...
# wrk (Debian's package) is bench-ea's load generator: installed here when missing and we
# can (root with apt-get), else the bench stops saying how to get it.
.PHONY: bench-ea wrk
wrk:
	@if command -v wrk >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's wrk for bench-ea"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } >/dev/null 2>&1; \
	fi; \
	command -v wrk >/dev/null 2>&1 || { echo "bench-ea needs wrk: apt-get install wrk (or put it on PATH)" >&2; exit 1; }

bench-ea: venv wrk
	DJANGO_ENV=test $(PY) -m config.embedded run -- $(PY) bench/ea_bench.py $(BENCH_ARGS)

# 1,000 EAs long-polling one node (gunicorn as config/gunicorn.py sets it up, a Celery
# worker): crossing quote (feed API) -> command read by the waiting EA, p50/p99 over
# rounds. BENCH_ARGS="--eas 1000 --rounds 60 --per-round 10", "--no-poll", ...
.PHONY: bench-longpoll
bench-longpoll: venv
	DJANGO_ENV=test $(PY) -m config.embedded run -- $(PY) bench/longpoll_bench.py $(BENCH_ARGS)

# Soak (bench/soak.py): gunicorn, two Celery workers and two beats on a database of
# their own and a redis-server of their own, simulated EAs on the reference client,
# a real-data and a random-walk feed, and faults (worker and gunicorn SIGKILL, Redis
# restart, PostgreSQL connections terminated, lost/duplicated/replayed acks, silent
# EAs); prints the table and fails unless every close happened exactly once.
# Minutes long, so not in `make test` (tests/e2e/test_soak.py runs --quick there).
# SOAK_ARGS="--rounds 3 --eas 12", "--quick", "--json out.json", ...
SOAK_ARGS ?=

.PHONY: soak
soak: venv
	DJANGO_ENV=test $(PY) -m config.embedded run -- $(PY) bench/soak.py $(SOAK_ARGS)
