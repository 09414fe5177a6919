"""The analytics messages as one tagged union, with the codec made once.

Everything the analytics cores produce for the bus: bars, moving averages, VWAP, NBBO and
arbitrage events. JSON with decimal strings for prices and sizes, integer nanoseconds for
times, and a `type` field saying which message it is. Proposed subjects (all in an ANALYTICS
stream over `analytics.>`, so `md.>` keeps carrying only the venues' own messages):

| subject | message |
|---|---|
| `analytics.bars.<timeframe>.<venue>.<symbol>` | `Bar` (`bar`) |
| `analytics.indicators.<timeframe>.<venue>.<symbol>` | `BarIndicators` (`indicators`) |
| `analytics.vwap.<venue>.<symbol>` | `VwapUpdate` (`vwap`) |
| `analytics.nbbo.<symbol>` | `Nbbo` (`nbbo`) |
| `analytics.arb.<symbol>` | `ArbitrageOpened` / `ArbitrageClosed` |
"""

from __future__ import annotations

import msgspec

from bourse.analytics.arbitrage import ArbitrageClosed, ArbitrageOpened
from bourse.analytics.bars import Bar
from bourse.analytics.indicators import BarIndicators, VwapUpdate
from bourse.analytics.nbbo import Nbbo

AnalyticsMessage = Bar | BarIndicators | VwapUpdate | Nbbo | ArbitrageOpened | ArbitrageClosed

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AnalyticsMessage] = msgspec.json.Decoder(AnalyticsMessage)


def encode(message: AnalyticsMessage) -> bytes:
    return _encoder.encode(message)


def decode(payload: bytes) -> AnalyticsMessage:
    """Decode one analytics message; raises msgspec.ValidationError/DecodeError if bad."""
    return _decoder.decode(payload)
