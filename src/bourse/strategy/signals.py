"""Stage 2, the signal: when the strategy wants to be long, and when flat.

Long only (a cash account cannot short). The rule compares two values and a threshold `t`
in basis points; the state changes only past the threshold, so in between it is kept:

- `crossover`: spread = (fast SMA - slow SMA) / slow SMA. Long when spread > t, flat when
  spread < -t.
- `momentum`: distance = (price - slow SMA) / slow SMA, and the tick's change. Long when
  distance > t and change >= `min_change_bps`; flat when distance < -t and change <=
  -`min_change_bps`.

Nothing is signalled until the indicators it needs exist. Only changes are signalled: the
first is always an entry (the strategy starts flat).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from bourse.strategy.config import StrategyConfig
from bourse.strategy.prices import BPS
from bourse.strategy.types import Direction, Enriched, Signal

_SHOWN = Decimal("0.01")


def _bps(value: Decimal, base: Decimal) -> Decimal:
    return (value - base) * BPS / base


class SignalGenerator:
    def __init__(self, config: StrategyConfig) -> None:
        self._config = config
        self.direction = Direction.FLAT

    def on_enriched(self, enriched: Enriched) -> Signal | None:
        """The signal this tick raises, if it changes the direction."""
        wanted, reason = self._wanted(enriched)
        if wanted is None or wanted == self.direction:
            return None
        self.direction = wanted
        return Signal(tick=enriched.tick, direction=wanted, reason=reason)

    def _wanted(self, e: Enriched) -> tuple[Direction | None, str]:
        config = self._config
        threshold = config.threshold_bps
        if e.slow is None or e.slow <= 0:
            return None, ""
        if config.rule == "crossover":
            if e.fast is None:
                return None, ""
            spread = _bps(e.fast, e.slow)
            shown = spread.quantize(_SHOWN, rounding=ROUND_HALF_EVEN)
            if spread > threshold:
                return Direction.LONG, f"fast SMA {e.fast} above slow {e.slow} by {shown} bps"
            if spread < -threshold:
                return Direction.FLAT, f"fast SMA {e.fast} below slow {e.slow} by {-shown} bps"
            return None, ""
        if e.change_bps is None:
            return None, ""
        distance = _bps(e.tick.price, e.slow)
        shown = distance.quantize(_SHOWN, rounding=ROUND_HALF_EVEN)
        confirm = config.min_change_bps
        if distance > threshold and e.change_bps >= confirm:
            return (
                Direction.LONG,
                f"price {e.tick.price} above slow SMA {e.slow} by {shown} bps, "
                f"up {e.change_bps} bps",
            )
        if distance < -threshold and e.change_bps <= -confirm:
            return (
                Direction.FLAT,
                f"price {e.tick.price} below slow SMA {e.slow} by {-shown} bps, "
                f"down {-e.change_bps} bps",
            )
        return None, ""
