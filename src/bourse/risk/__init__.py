"""Risk: post-trade exposure, P&L, drawdown and order-rate rules, alerts and the kill switch."""
