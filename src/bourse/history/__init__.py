"""The history service: quotes and trades recorded from MARKET_DATA, bars computed from them,
and answers to queries over NATS request/reply (docs/history.md)."""
