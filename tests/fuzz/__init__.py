"""A seeded stanza fuzzer for Herald (tests/integration/test_fuzz.py runs it)."""
