"""The risk rules: what each account may hold and lose, as validated configuration.

`RiskRules` is one account's set of limits; every limit is optional (None: the rule is off).
`RiskConfig` holds the rules every account gets (`defaults`) and per-account overrides
(`accounts`), which name only the fields they change:

    RiskConfig(
        defaults=RiskRules(daily_loss_limit=Decimal(50_000), max_order_rate=50),
        accounts={"mm1": RuleOverrides(daily_loss_limit=None, max_gross_exposure=Decimal(10**7))},
    )

Money limits are amounts in the quote currency; concentration and drawdown are fractions
(0.25 = 25 %). A rule warns when its value reaches `warning_at` of the limit and is
critical at the limit; `hysteresis` (a fraction of the limit) is how far back under a
level the value must fall before that level can fire again. See docs/risk.md.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from pathlib import Path

import msgspec

from bourse.errors import ConfigError


class RuleName(enum.StrEnum):
    """The rules, in the order the core evaluates them (and so the order of their alerts)."""

    DAILY_LOSS = "daily_loss"
    DRAWDOWN = "drawdown"
    GROSS_EXPOSURE = "gross_exposure"
    NET_EXPOSURE = "net_exposure"
    CONCENTRATION = "concentration"
    ORDER_RATE = "order_rate"


class RiskRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One account's limits. None turns a rule off; every rule is off by default.

    - `max_gross_exposure`: Σ |qty × mark| over the account's positions.
    - `max_net_exposure`: |Σ qty × mark| (long minus short).
    - `max_concentration`: the largest position's share of gross exposure, in (0, 1].
    - `daily_loss_limit`: the loss since the start of the trading day (UTC); reaching it
      trips the kill switch (the account is halted until an admin resumes it).
    - `max_drawdown`: the fall from peak equity as a fraction of that peak, in (0, 1].
    - `max_order_rate`: orders submitted within the last `order_rate_window` seconds.
    - `warning_at`: the fraction of a limit where a warning fires, in (0, 1] (1: no warnings).
    - `hysteresis`: the fraction of a limit a value must fall back below a level before the
      level re-arms, in [0, 1); it keeps a value hovering at a threshold from alerting on
      every tick.
    """

    max_gross_exposure: Decimal | None = None
    max_net_exposure: Decimal | None = None
    max_concentration: Decimal | None = None
    daily_loss_limit: Decimal | None = None
    max_drawdown: Decimal | None = None
    max_order_rate: int | None = None
    order_rate_window: Decimal = Decimal(1)
    warning_at: Decimal = Decimal("0.8")
    hysteresis: Decimal = Decimal("0.05")

    def __post_init__(self) -> None:
        for name in ("max_gross_exposure", "max_net_exposure", "daily_loss_limit"):
            amount = getattr(self, name)
            if amount is not None and not (amount.is_finite() and amount > 0):
                raise ConfigError(name, amount, "a positive amount, or null to turn the rule off")
        for name in ("max_concentration", "max_drawdown"):
            fraction = getattr(self, name)
            if fraction is not None and not (fraction.is_finite() and 0 < fraction <= 1):
                raise ConfigError(
                    name, fraction, "a fraction in (0, 1], e.g. 0.25, or null to turn it off"
                )
        if self.max_order_rate is not None and self.max_order_rate < 1:
            raise ConfigError(
                "max_order_rate", self.max_order_rate, "a whole number of orders >= 1, or null"
            )
        if not (self.order_rate_window.is_finite() and self.order_rate_window * 10**9 >= 1):
            raise ConfigError("order_rate_window", self.order_rate_window, "seconds > 0")
        if not (self.warning_at.is_finite() and 0 < self.warning_at <= 1):
            raise ConfigError("warning_at", self.warning_at, "a fraction in (0, 1], e.g. 0.8")
        if not (self.hysteresis.is_finite() and 0 <= self.hysteresis < 1):
            raise ConfigError("hysteresis", self.hysteresis, "a fraction in [0, 1), e.g. 0.05")

    @property
    def order_rate_window_ns(self) -> int:
        return int(self.order_rate_window * 10**9)

    def limit(self, rule: RuleName) -> Decimal | None:
        """The limit of `rule` (None when the rule is off)."""
        match rule:
            case RuleName.DAILY_LOSS:
                return self.daily_loss_limit
            case RuleName.DRAWDOWN:
                return self.max_drawdown
            case RuleName.GROSS_EXPOSURE:
                return self.max_gross_exposure
            case RuleName.NET_EXPOSURE:
                return self.max_net_exposure
            case RuleName.CONCENTRATION:
                return self.max_concentration
            case RuleName.ORDER_RATE:
                return None if self.max_order_rate is None else Decimal(self.max_order_rate)


class RuleOverrides(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An account's changes to the default rules: a field left out keeps the default, null
    turns that rule off for the account. The fields are those of `RiskRules`."""

    max_gross_exposure: Decimal | msgspec.UnsetType | None = msgspec.UNSET
    max_net_exposure: Decimal | msgspec.UnsetType | None = msgspec.UNSET
    max_concentration: Decimal | msgspec.UnsetType | None = msgspec.UNSET
    daily_loss_limit: Decimal | msgspec.UnsetType | None = msgspec.UNSET
    max_drawdown: Decimal | msgspec.UnsetType | None = msgspec.UNSET
    max_order_rate: int | msgspec.UnsetType | None = msgspec.UNSET
    order_rate_window: Decimal | msgspec.UnsetType = msgspec.UNSET
    warning_at: Decimal | msgspec.UnsetType = msgspec.UNSET
    hysteresis: Decimal | msgspec.UnsetType = msgspec.UNSET

    def apply_to(self, rules: RiskRules) -> RiskRules:
        """`rules` with these overrides; raises ConfigError if the result is invalid."""
        changes = {
            name: value
            for name in self.__struct_fields__
            if (value := getattr(self, name)) is not msgspec.UNSET
        }
        return msgspec.structs.replace(rules, **changes) if changes else rules


def _no_overrides() -> dict[str, RuleOverrides]:
    return {}


class RiskConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The rules of every account: `defaults`, changed per account by `accounts`."""

    defaults: RiskRules = RiskRules()
    accounts: dict[str, RuleOverrides] = msgspec.field(default_factory=_no_overrides)

    def __post_init__(self) -> None:
        for account_id in self.accounts:
            try:
                self.rules_for(account_id)
            except ConfigError as exc:
                raise ConfigError(
                    f"accounts.{account_id}.{exc.setting}", exc.given, exc.accepted
                ) from exc

    def rules_for(self, account_id: str) -> RiskRules:
        overrides = self.accounts.get(account_id)
        return self.defaults if overrides is None else overrides.apply_to(self.defaults)


def read_config(path: Path) -> RiskConfig:
    """The `RiskConfig` in a file: TOML if its name ends in `.toml`, JSON otherwise.

    Raises ConfigError naming the file and what is wrong (unreadable, malformed, an unknown
    setting, a limit out of range). TOML has no null: turning a rule off for one account
    needs a JSON file.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
        raise ConfigError(
            "risk configuration file", str(path), f"a readable file ({problem})"
        ) from None
    toml = path.suffix.lower() == ".toml"
    try:
        if toml:
            return msgspec.toml.decode(data, type=RiskConfig)
        return msgspec.json.decode(data, type=RiskConfig)
    except msgspec.DecodeError as exc:  # ValidationError included
        accepted = f"{'TOML' if toml else 'JSON'} with `defaults` and `accounts` as in docs/risk.md"
        raise ConfigError(f"risk configuration {path}", str(exc), accepted) from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.setting}", exc.given, exc.accepted) from None
