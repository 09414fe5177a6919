"""Accounts: pre-trade checks, reservations and the ledger (cash, positions, P&L)."""
