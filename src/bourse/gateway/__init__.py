"""The gateway: Alpaca-compatible REST and WebSocket API over the ORDERS journal."""
