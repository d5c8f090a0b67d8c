"""Fixtures the integration suites share beyond the module that defines them."""

from tests.integration.test_pubsub_proxy import clients, proxy

__all__ = ["clients", "proxy"]
