"""The signal rules against hand-made indicator values: crossings, thresholds, hysteresis."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bourse.strategy.config import StrategyConfig
from bourse.strategy.signals import SignalGenerator
from bourse.strategy.types import Direction, Enriched
from tests.strategy.factories import tick


def _e(
    fast: str | None,
    slow: str | None,
    *,
    price: str = "100",
    change_bps: str | None = "0",
) -> Enriched:
    return Enriched(
        tick=tick(price),
        fast=None if fast is None else Decimal(fast),
        slow=None if slow is None else Decimal(slow),
        change=None,
        change_bps=None if change_bps is None else Decimal(change_bps),
    )


def _directions(generator: SignalGenerator, values: list[Enriched]) -> list[Direction | None]:
    out = []
    for value in values:
        signal = generator.on_enriched(value)
        out.append(None if signal is None else signal.direction)
    return out


def test_crossover_signals_each_crossing_once_and_nothing_before_the_smas_exist() -> None:
    generator = SignalGenerator(StrategyConfig(fast=2, slow=3))
    got = _directions(
        generator,
        [
            _e(None, None),
            _e("101", None),
            _e("101", "100"),  # above: enter
            _e("102", "100"),  # still above: nothing
            _e("99", "100"),  # below: exit
            _e("98", "100"),
            _e("100", "100"),  # equal, inside any band: keep flat
            _e("100.01", "100"),  # 1 bp above: enter
        ],
    )
    L, F = Direction.LONG, Direction.FLAT
    assert got == [None, None, L, None, F, None, None, L]


def test_crossover_threshold_keeps_the_position_inside_the_band() -> None:
    generator = SignalGenerator(StrategyConfig(fast=2, slow=3, threshold_bps=Decimal(10)))
    got = _directions(
        generator,
        [
            _e("100.10", "100"),  # exactly 10 bps: not past the threshold
            _e("100.11", "100"),  # 11 bps: enter
            _e("99.95", "100"),  # -5 bps: inside the band, stay long
            _e("99.89", "100"),  # -11 bps: exit
        ],
    )
    assert got == [None, Direction.LONG, None, Direction.FLAT]


def test_a_signal_says_why() -> None:
    generator = SignalGenerator(StrategyConfig(fast=2, slow=3))
    signal = generator.on_enriched(_e("100.50", "100.00"))
    assert signal is not None
    assert signal.reason == "fast SMA 100.50 above slow 100.00 by 50.00 bps"


@pytest.mark.parametrize(
    ("price", "change", "expected"),
    [
        ("101", "5", Direction.LONG),  # above the slow SMA and rising enough
        ("101", "1", None),  # above but not rising enough
        ("99", "-5", None),  # already flat: no exit signal
    ],
)
def test_momentum_needs_the_change_to_confirm(
    price: str, change: str, expected: Direction | None
) -> None:
    config = StrategyConfig(rule="momentum", fast=2, slow=3, min_change_bps=Decimal(2))
    generator = SignalGenerator(config)
    assert _directions(generator, [_e(None, "100", price=price, change_bps=change)]) == [expected]


def test_momentum_exits_below_the_slow_sma_when_falling() -> None:
    config = StrategyConfig(
        rule="momentum", fast=2, slow=3, min_change_bps=Decimal(2), threshold_bps=Decimal(50)
    )
    generator = SignalGenerator(config)
    got = _directions(
        generator,
        [
            _e(None, "100", price="100.60", change_bps="3"),  # 60 bps above, up 3: enter
            _e(None, "100", price="99.70", change_bps="-3"),  # 30 bps below: inside the band
            _e(None, "100", price="99.40", change_bps="1"),  # below, but rising: keep
            _e(None, "100", price="99.40", change_bps="-2"),  # below and falling: exit
        ],
    )
    assert got == [Direction.LONG, None, None, Direction.FLAT]
