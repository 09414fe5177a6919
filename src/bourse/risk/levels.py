"""Alert levels with hysteresis: when a rule's value fires a warning or a critical alert.

A level fires once when the value reaches its threshold (`warning_at` × limit for a warning,
the limit itself for critical) and holds until the value falls `hysteresis` × limit below
that threshold; only then can it fire again. A value that jumps straight past the limit
fires critical alone, not a warning first.
"""

from __future__ import annotations

import enum
from decimal import Decimal


class Level(enum.IntEnum):
    NORMAL = 0
    WARNING = 1
    CRITICAL = 2


def thresholds(limit: Decimal, warning_at: Decimal) -> dict[Level, Decimal]:
    """The value at which each level fires."""
    return {Level.WARNING: limit * warning_at, Level.CRITICAL: limit}


def next_level(
    current: Level, value: Decimal, limit: Decimal, warning_at: Decimal, hysteresis: Decimal
) -> Level:
    """The level after `value`, from `current`."""
    warning = limit * warning_at
    margin = limit * hysteresis
    reached = (
        Level.CRITICAL if value >= limit else Level.WARNING if value >= warning else Level.NORMAL
    )
    held = (
        Level.CRITICAL
        if value >= limit - margin
        else Level.WARNING
        if value >= warning - margin
        else Level.NORMAL
    )
    return max(reached, min(current, held))
