"""Messages of the POSITIONS stream: `positions.<account>.<symbol>`."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from bourse.model.subjects import Id, Symbol


class PositionChanged(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="position"):
    """An account's position in one symbol after a fill (qty 0: the position is closed)."""

    ts: int
    account_id: Id
    symbol: Symbol
    qty: Decimal
    avg_entry_price: Decimal
    realized_pnl: Decimal  # the account's realized P&L so far, all symbols
    cash: Decimal
    match_id: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PositionChanged)


def encode(message: PositionChanged) -> bytes:
    return _encoder.encode(message)


def decode(payload: bytes) -> PositionChanged:
    return _decoder.decode(payload)
