"""Shared domain types: instruments, money, market data, subjects."""
