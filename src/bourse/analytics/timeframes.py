"""Bar timeframes: a fixed width, aligned to the Unix epoch (UTC).

`Timeframe.parse` reads Alpaca's spellings (`1Min`, `5T`, `1Hour`, `12H`, `1Day`, `1D`),
Alpaca-style seconds (`1Sec`) and the short lower-case forms common elsewhere (`1s`, `5m`,
`1h`, `1d`). `str(timeframe)` is the canonical Alpaca-style name (`1Sec`, `5Min`, `1Hour`,
`1Day`), which is also the subject token. Ranges are Alpaca's: 1-59 seconds or minutes,
1-23 hours, 1 day. Weeks and months are calendar periods, not fixed widths, and are refused.

A bar of timeframe `tf` covers `[start, start + tf.width_ns)` with `start` a multiple of
`tf.width_ns` since the epoch, so every 1-minute bar is exactly sixty 1-second bars and days
are UTC days (Bourse's trading day).
"""

from __future__ import annotations

import enum
import re

import msgspec

from bourse.errors import ConfigError

SECOND_NS = 1_000_000_000


class TimeUnit(enum.StrEnum):
    SECOND = "Sec"
    MINUTE = "Min"
    HOUR = "Hour"
    DAY = "Day"


_UNIT_NS = {
    TimeUnit.SECOND: SECOND_NS,
    TimeUnit.MINUTE: 60 * SECOND_NS,
    TimeUnit.HOUR: 3_600 * SECOND_NS,
    TimeUnit.DAY: 86_400 * SECOND_NS,
}
_MAX_AMOUNT = {TimeUnit.SECOND: 59, TimeUnit.MINUTE: 59, TimeUnit.HOUR: 23, TimeUnit.DAY: 1}

# Case matters for one-letter units: Alpaca's `M` is a month, `m` a minute elsewhere.
_LETTERS = {
    "s": TimeUnit.SECOND,
    "S": TimeUnit.SECOND,
    "m": TimeUnit.MINUTE,
    "T": TimeUnit.MINUTE,
    "h": TimeUnit.HOUR,
    "H": TimeUnit.HOUR,
    "d": TimeUnit.DAY,
    "D": TimeUnit.DAY,
}
_WORDS = {
    **{w: TimeUnit.SECOND for w in ("sec", "secs", "second", "seconds")},
    **{w: TimeUnit.MINUTE for w in ("min", "mins", "minute", "minutes")},
    **{w: TimeUnit.HOUR for w in ("hour", "hours", "hr", "hrs")},
    **{w: TimeUnit.DAY for w in ("day", "days")},
}
_SPELLING = re.compile(r"^\s*(\d+)\s*([A-Za-z]+)\s*$")
_ACCEPTED = (
    "a count and a unit: 1-59 Sec|s, 1-59 Min|T|m, 1-23 Hour|H|h, or 1Day|1D|1d "
    "(e.g. 1s, 1Min, 5Min, 1Hour); weeks and months are not fixed widths"
)


class Timeframe(msgspec.Struct, frozen=True, order=True):
    """A bar width: `amount` of `unit`, ordered by width. Make one with `of` or `parse`."""

    width_ns: int
    amount: int
    unit: TimeUnit

    @classmethod
    def of(cls, amount: int, unit: TimeUnit) -> Timeframe:
        return cls._checked(amount, unit, f"{amount}{unit.value}")

    @classmethod
    def _checked(cls, amount: int, unit: TimeUnit, given: str) -> Timeframe:
        if not 1 <= amount <= _MAX_AMOUNT[unit]:
            raise ConfigError("timeframe", given, _ACCEPTED)
        return cls(width_ns=amount * _UNIT_NS[unit], amount=amount, unit=unit)

    @classmethod
    def parse(cls, text: str) -> Timeframe:
        """Read `1s`, `1Min`, `5Min`, `1Hour`, `1Day` and the other spellings above."""
        match = _SPELLING.match(text)
        if match is None:
            raise ConfigError("timeframe", text, _ACCEPTED)
        amount, word = int(match.group(1)), match.group(2)
        unit = _LETTERS.get(word) if len(word) == 1 else _WORDS.get(word.lower())
        if unit is None:
            raise ConfigError("timeframe", text, _ACCEPTED)
        return cls._checked(amount, unit, text)

    def start_of(self, ts: int) -> int:
        """Start of the bar containing `ts` (ns since the epoch)."""
        return ts - ts % self.width_ns

    def __str__(self) -> str:
        return f"{self.amount}{self.unit.value}"


SECOND = Timeframe.of(1, TimeUnit.SECOND)
MINUTE = Timeframe.of(1, TimeUnit.MINUTE)
FIVE_MINUTES = Timeframe.of(5, TimeUnit.MINUTE)
HOUR = Timeframe.of(1, TimeUnit.HOUR)
DEFAULT_TIMEFRAMES: tuple[Timeframe, ...] = (SECOND, MINUTE, FIVE_MINUTES, HOUR)


def as_timeframe(value: Timeframe | str) -> Timeframe:
    """`value` itself, or parsed when it is a spelling such as `5Min`."""
    return value if isinstance(value, Timeframe) else Timeframe.parse(value)
