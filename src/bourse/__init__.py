"""Bourse: a real-time market-data and trading platform on NATS JetStream."""

__version__ = "0.1.0"
