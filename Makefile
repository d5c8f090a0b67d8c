# The two commands of the quick start, and the checks CI runs.
.PHONY: demo test lint

# Set up and run a local demo: a throwaway Prosody (STARTTLS, self-signed) and Herald on
# embedded SQLite, a short tour of both services, then serve until Ctrl-C.
# DEMO_ARGS: --no-tour, --tour-only (exit after it, 0 if it worked), --c2s-port=5222.
DEMO_ARGS ?=
demo:
	bash tests/bootstrap.sh
	.venv/bin/python -m tests.harness.demo $(DEMO_ARGS)

# Install what the tests need (venv, servers, a PostgreSQL) and run them all.
# The bootstrap writes the PostgreSQL URL to use to .pgtest/url; a private cluster it
# started for the tests is stopped afterwards, whatever their result.
test:
	bash tests/bootstrap.sh --postgres
	HERALD_TEST_POSTGRES_URL="$$(cat .pgtest/url)" .venv/bin/python -m pytest -q -p no:cacheprovider; \
	status=$$?; bash tests/bootstrap.sh --stop-postgres; exit $$status

lint:
	.venv/bin/ruff check component tests migrations bench
	.venv/bin/ruff format --check component tests migrations bench
	.venv/bin/mypy --strict component
