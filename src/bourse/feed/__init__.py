"""Market-data feeds: a simulator and replay of real historical data, on md.<venue>.<symbol>."""
