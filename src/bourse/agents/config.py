"""The market makers' settings: the ladders, the account's funding, the pace of re-quotes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec

from bourse.agents.market_maker import MakerConfig
from bourse.errors import ConfigError

# The default ladder (100 units a level) is sized for shares; coins trade in smaller units.
DEFAULT_SYMBOL_CONFIGS: dict[str, MakerConfig] = {
    "BTC-USD": MakerConfig(
        size=Decimal("0.1"), max_inventory=Decimal(2), skew_bps_per_unit=Decimal(2)
    ),
    "ETH-USD": MakerConfig(
        size=Decimal(2), max_inventory=Decimal(40), skew_bps_per_unit=Decimal("0.1")
    ),
}


# Coins the maker starts with (crypto cannot be sold short): as much as its ladder may buy,
# so it can sell as far as it can buy, and it leans its quotes around this inventory.
DEFAULT_HOLDINGS: dict[str, Decimal] = {"BTC-USD": Decimal(2), "ETH-USD": Decimal(40)}


def _default_symbol_configs() -> dict[str, MakerConfig]:
    return dict(DEFAULT_SYMBOL_CONFIGS)


def _default_holdings() -> dict[str, Decimal]:
    return dict(DEFAULT_HOLDINGS)


class MarketMakersConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the makers quote, and how much they are funded with.

    - `quoting`: the ladder for every symbol without an entry in `per_symbol`.
    - `deposit`: cash deposited once, when the account is opened (never again on restarts).
    - `holdings`: units per symbol deposited once (`AssetDeposited`, at the first reference
      price as cost basis), for what the account cannot sell short (crypto); the ladder then
      leans around that inventory instead of around zero.
    - `requote_threshold_bps`: the reference must move this far from the one the ladder was
      built on before the ladder follows it (fills and confirmed cancels re-quote anyway).
    - `min_requote_interval`: seconds between two re-quotes of one symbol, at least.
    - `refusal_backoff`, `max_refusal_backoff`: after an order is refused the symbol waits
      this long before it is quoted again, doubling on each refusal up to the maximum, and
      back to the start once an order is accepted.
    - `cancel_timeout`: seconds `stop()` (and `start()`, for an earlier run's orders) waits
      for cancels to be confirmed.
    """

    quoting: MakerConfig = MakerConfig()
    per_symbol: dict[str, MakerConfig] = msgspec.field(default_factory=_default_symbol_configs)
    deposit: Decimal = Decimal(10_000_000)
    holdings: dict[str, Decimal] = msgspec.field(default_factory=_default_holdings)
    requote_threshold_bps: Decimal = Decimal(2)
    min_requote_interval: float = 0.2
    refusal_backoff: float = 1.0
    max_refusal_backoff: float = 30.0
    cancel_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not self.deposit.is_finite() or self.deposit <= 0:
            raise ConfigError("deposit", self.deposit, "a positive amount of cash")
        for symbol, qty in self.holdings.items():
            if not qty.is_finite() or qty <= 0:
                raise ConfigError(f"holdings[{symbol}]", qty, "a positive quantity")
        if not self.requote_threshold_bps.is_finite() or self.requote_threshold_bps < 0:
            raise ConfigError(
                "requote_threshold_bps", self.requote_threshold_bps, "basis points >= 0"
            )
        if not self.min_requote_interval >= 0:
            raise ConfigError("min_requote_interval", self.min_requote_interval, "seconds >= 0")
        for name in ("refusal_backoff", "cancel_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, getattr(self, name), "seconds > 0")
        if not self.max_refusal_backoff >= self.refusal_backoff:
            raise ConfigError(
                "max_refusal_backoff", self.max_refusal_backoff, "seconds >= refusal_backoff"
            )

    def for_symbol(self, symbol: str) -> MakerConfig:
        return self.per_symbol.get(symbol, self.quoting)

    def holding(self, symbol: str) -> Decimal:
        return self.holdings.get(symbol, Decimal(0))


@dataclass
class MakerStats:
    # AccountOpened, CashDeposited and AssetDeposited sent (once per account ever)
    account_requests: int = 0
    requotes: int = 0  # plans computed
    orders_sent: int = 0
    cancels_sent: int = 0
    fills: int = 0
    refusals: Counter[str] = field(default_factory=Counter)  # by reject code
