"""The strategy's settings: the signal, the Kelly sizing, the orders, the pipeline's queues.

One frozen Struct that refuses unknown fields; `check()` says what is wrong with a value and
what is accepted. The defaults are a slow trend follower on quote mids: a 5-tick SMA crossing
a 20-tick SMA, a quarter of equity at most, IOC limit orders 25 bps through the quote.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from bourse.errors import ConfigError

Rule = Literal["crossover", "momentum"]
PriceSource = Literal["auto", "mid", "trade"]
RULES: tuple[Rule, ...] = ("crossover", "momentum")
PRICE_SOURCES: tuple[PriceSource, ...] = ("auto", "mid", "trade")

_ONE = Decimal(1)
_ZERO = Decimal(0)


class StrategyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the pipeline computes and how it trades (docs/strategy.md has the formulas).

    Signal:
    - `rule`: `crossover` (the fast SMA against the slow one) or `momentum` (the price against
      the slow SMA, confirmed by the last tick's change);
    - `fast`, `slow`: SMA windows in ticks (fast < slow);
    - `threshold_bps`: how far apart the compared values must be to enter (above) or exit
      (below); in between the position is kept (hysteresis, so noise does not flip it);
    - `min_change_bps`: `momentum` only, the last tick's change that confirms a move;
    - `price_source`: what a tick's price is: `mid` (quotes' mid), `trade` (prints) or
      `auto` (mids; trades only until the venue's first quote).

    Sizing (a capped Kelly fraction of equity, estimated from the strategy's closed trades):
    - `kelly_cap`: the largest fraction of equity ever put in the position;
    - `prior_win_rate`, `prior_payoff`, `prior_weight`: the prior the estimates start from and
      shrink towards, worth `prior_weight` trades.

    Orders (IOC limits, live and simulated alike):
    - `limit_bps`: how far through the quote the limit goes (the worst price accepted);
    - `fee_bps`: fees charged on a fill's notional (the back-test's; sizing reserves for it);
    - `slippage_bps`: the back-test's slippage, drawn from the seed, uniform in [0, this];
    - `max_tick_age_s`: live only, a signal from a tick older than this is not traded.

    Pipeline: `queue_size`, the bound of every queue between two stages.
    """

    rule: Rule = "crossover"
    fast: int = 5
    slow: int = 20
    threshold_bps: Decimal = _ZERO
    min_change_bps: Decimal = _ZERO
    price_source: PriceSource = "auto"
    kelly_cap: Decimal = Decimal("0.25")
    prior_win_rate: Decimal = Decimal("0.55")
    prior_payoff: Decimal = _ONE
    prior_weight: Decimal = Decimal(10)
    limit_bps: Decimal = Decimal(25)
    fee_bps: Decimal = _ONE
    slippage_bps: Decimal = Decimal(2)
    max_tick_age_s: float = 5.0
    queue_size: int = 1024

    def check(self) -> StrategyConfig:
        """Raise ConfigError for the first value out of range; return self."""
        if self.rule not in RULES:
            raise ConfigError("--rule", self.rule, " or ".join(RULES))
        if self.price_source not in PRICE_SOURCES:
            raise ConfigError("--price", self.price_source, ", ".join(PRICE_SOURCES))
        if self.fast < 1:
            raise ConfigError("--fast", self.fast, "a window of at least 1 tick")
        if self.slow <= self.fast:
            raise ConfigError(
                "--fast/--slow",
                f"{self.fast}/{self.slow}",
                "a fast window shorter than the slow one (fast < slow), e.g. --fast 5 --slow 20",
            )
        _non_negative("--threshold-bps", self.threshold_bps)
        _non_negative("--min-change-bps", self.min_change_bps)
        if not (self.kelly_cap.is_finite() and _ZERO < self.kelly_cap <= _ONE):
            raise ConfigError("--kelly-cap", self.kelly_cap, "a fraction of equity in (0, 1]")
        if not (self.prior_win_rate.is_finite() and _ZERO <= self.prior_win_rate <= _ONE):
            raise ConfigError("--prior-win-rate", self.prior_win_rate, "a probability in [0, 1]")
        if not (self.prior_payoff.is_finite() and self.prior_payoff > 0):
            raise ConfigError(
                "--prior-payoff", self.prior_payoff, "a positive ratio of average win to loss"
            )
        _non_negative("--prior-weight", self.prior_weight)
        _non_negative("--limit-bps", self.limit_bps)
        _non_negative("--fee-bps", self.fee_bps)
        _non_negative("--slippage-bps", self.slippage_bps)
        if self.slippage_bps > self.limit_bps:
            raise ConfigError(
                "--slippage-bps",
                self.slippage_bps,
                f"at most --limit-bps ({self.limit_bps}): a fill is never worse than its limit",
            )
        if not self.max_tick_age_s > 0:
            raise ConfigError("--max-tick-age", self.max_tick_age_s, "a positive number of seconds")
        if self.queue_size < 1:
            raise ConfigError("--queue-size", self.queue_size, "at least 1")
        return self


def _non_negative(setting: str, value: Decimal) -> None:
    if not (value.is_finite() and value >= 0):
        raise ConfigError(setting, value, "a number of at least 0")
