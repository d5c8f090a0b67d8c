# The two commands of the quick start, and the checks CI runs.
.PHONY: demo test lint

# Set up and run a local demo: a throwaway Prosody and Herald on embedded SQLite.
demo:
	bash tests/bootstrap.sh
	.venv/bin/python -m tests.harness.demo

# Install what the tests need (venv, Prosody, PostgreSQL started) and run them all.
test:
	bash tests/bootstrap.sh --postgres
	.venv/bin/python -m pytest -q -p no:cacheprovider

lint:
	.venv/bin/ruff check component tests migrations bench
	.venv/bin/ruff format --check component tests migrations bench
	.venv/bin/mypy --strict component
