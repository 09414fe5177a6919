"""Agents: market makers and strategies that trade through the public order API."""
