from __future__ import annotations

import pytest

from bourse.analytics.timeframes import (
    DEFAULT_TIMEFRAMES,
    MINUTE,
    SECOND,
    Timeframe,
    TimeUnit,
    as_timeframe,
)
from bourse.errors import ConfigError


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("1s", "1Sec"),
        ("1Sec", "1Sec"),
        ("1S", "1Sec"),
        ("30 seconds", "30Sec"),
        ("1Min", "1Min"),
        ("5Min", "5Min"),
        ("5T", "5Min"),
        ("5m", "5Min"),
        ("15min", "15Min"),
        ("1Hour", "1Hour"),
        ("12H", "12Hour"),
        ("4h", "4Hour"),
        ("1Day", "1Day"),
        ("1D", "1Day"),
        ("1d", "1Day"),
    ],
)
def test_alpaca_and_short_spellings_parse_to_the_canonical_name(
    spelling: str, canonical: str
) -> None:
    assert str(Timeframe.parse(spelling)) == canonical
    assert Timeframe.parse(canonical) == Timeframe.parse(spelling)


@pytest.mark.parametrize(
    "spelling", ["1M", "1Month", "1W", "1Week", "60Min", "24Hour", "2Day", "0s", "Min", "", "1x"]
)
def test_calendar_periods_and_out_of_range_widths_are_refused_with_what_is_accepted(
    spelling: str,
) -> None:
    with pytest.raises(ConfigError) as raised:
        Timeframe.parse(spelling)
    assert raised.value.setting == "timeframe"
    assert raised.value.given == spelling
    assert "1Min" in raised.value.accepted


def test_widths_alignment_and_order() -> None:
    five = Timeframe.of(5, TimeUnit.MINUTE)
    assert five.width_ns == 300 * SECOND.width_ns
    assert five.start_of(299_999_999_999) == 0
    assert five.start_of(300_000_000_000) == 300_000_000_000
    assert [str(t) for t in DEFAULT_TIMEFRAMES] == ["1Sec", "1Min", "5Min", "1Hour"]
    assert sorted([five, SECOND, MINUTE]) == [SECOND, MINUTE, five]
    assert as_timeframe("1Min") == MINUTE and as_timeframe(MINUTE) is MINUTE
