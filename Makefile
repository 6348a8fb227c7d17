# The two commands a new user needs: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test chaos install services lint bench check-deploy clean

run: install
	scripts/run.sh

test: install services
	scripts/test.sh $(ARGS)

# The chaos scenarios (also part of `make test`, at scale 1), CHAOS_SCALE times bigger; figures in test-output/chaos/.
CHAOS_SCALE ?= 5
chaos: install services
	CHAOS_SCALE=$(CHAOS_SCALE) scripts/test.sh -m chaos donutsite/tests/test_chaos.py $(ARGS)

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt scripts/install.sh
	PYTHON=$(PYTHON) scripts/install.sh
	touch $(STAMP)

services:
	scripts/services.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install services
	scripts/bench.sh

# Production settings (DJANGO_DEBUG unset, and not make run's .env) with throwaway secrets: must report nothing.
check-deploy: install
	DJANGO_ENV_FILE= DJANGO_SECRET_KEY=$$(head -c 48 /dev/urandom | base64) DJANGO_ALLOWED_HOSTS=donuts.example.com \
		PUBLIC_BASE_URL=https://donuts.example.com FACTORY_API_KEY=check FACTORY_CALLBACK_SECRET=check \
		$(BIN)/python manage.py check --deploy --fail-level WARNING

# var/ holds make run's Redis data (queues, dead-letter copies, login lockouts), the factory simulator's
# orders, keys and logins; .env goes only if make run wrote it.
clean:
	[ ! -f .env ] || [ "$$(head -n 1 .env)" != "# Written by make run (scripts/run.sh) at every start; make clean deletes it." ] || rm -f .env
	rm -rf $(VENV) db.sqlite3 var staticfiles test-output
