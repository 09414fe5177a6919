"""The matching engine: one order book per symbol, price-time priority (pure core + shell)."""
