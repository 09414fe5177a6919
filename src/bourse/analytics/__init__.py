"""Analytics over market data: pure indicator cores and the consumers that feed them."""
