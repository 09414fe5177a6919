"""The in-process exchange behind its gateway (tests/gateway/conftest.py), for the live
strategy tests."""

from tests.gateway.conftest import exchange

__all__ = ["exchange"]
