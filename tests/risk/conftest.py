"""The in-process exchange behind its gateway (tests/gateway/conftest.py), for the risk
service's end-to-end tests."""

from tests.gateway.conftest import exchange

__all__ = ["exchange"]
