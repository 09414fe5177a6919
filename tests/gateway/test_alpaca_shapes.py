"""Bourse's answers parse in the official alpaca-py models; bad requests are refused."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from alpaca.trading.enums import OrderStatus, PositionSide
from alpaca.trading.models import Asset
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.models import Position as AlpacaPosition
from pydantic import ValidationError

from bourse.accounts.readmodel.rows import Order, Position
from bourse.gateway.alpaca import (
    OrderRequest,
    asset_json,
    order_json,
    position_json,
    rfc3339,
)
from bourse.model.instruments import universe_by_symbol

NS = 1_763_800_000_123_456_789


def test_an_order_row_parses_as_an_alpaca_order() -> None:
    row = Order(
        id="0b6a5b3e-2f3c-4a43-9c1f-1c0e4e2a9d11",
        client_order_id="my-1",
        account_id="acct",
        symbol="AAPL",
        asset_class="us_equity",
        side="buy",
        type="limit",
        time_in_force="gtc",
        qty=D("10"),
        filled_qty=D("4"),
        filled_notional=D("760.20"),
        filled_avg_price=D("190.05"),
        limit_price=D("190.10"),
        stop_price=None,
        status="partially_filled",
        created_at=NS,
        updated_at=NS,
        submitted_at=NS,
    )
    parsed = AlpacaOrder(**order_json(row))
    assert str(parsed.id) == row.id
    assert parsed.status is OrderStatus.PARTIALLY_FILLED
    assert parsed.filled_avg_price == "190.05" and parsed.qty == "10"
    assert parsed.submitted_at.microsecond == 123456


def test_positions_and_assets_parse_and_mark_to_market() -> None:
    instrument = universe_by_symbol()["TSLA"]
    row = Position(
        account_id="a",
        symbol="TSLA",
        qty=D("-3"),
        avg_entry_price=D("250"),
        cost_basis=D("-750"),
        updated_at=NS,
    )
    payload = position_json(row, instrument, mark=D("240"))
    parsed = AlpacaPosition(**payload)
    assert parsed.side is PositionSide.SHORT
    assert parsed.unrealized_pl == "30"  # short 3 from 250 to 240
    assert parsed.market_value == "-720"
    asset = Asset(**asset_json(universe_by_symbol()["BTC-USD"]))
    assert asset.fractionable and asset.symbol == "BTC-USD"


def test_rfc3339_keeps_microseconds_in_utc() -> None:
    assert rfc3339(NS) == "2025-11-22T08:26:40.123456Z"
    assert rfc3339(None) is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"qty": "NaN"}, "finite"),
        ({"qty": "Infinity"}, "finite"),
        ({"qty": "ten"}, "decimal number"),
        ({"qty": True}, "decimal number"),
        ({"qty": [1]}, "decimal number"),
        ({"side": "hold"}, "side"),
        ({"type": "trailing_stop"}, "type"),
        ({"time_in_force": "opg"}, "time_in_force"),
        ({"color": "red"}, "Extra inputs"),
        ({"client_order_id": "x" * 129}, "client_order_id"),
    ],
)
def test_bad_order_requests_are_refused_with_the_field_named(body: dict, problem: str) -> None:  # type: ignore[type-arg]
    valid = {"symbol": "AAPL", "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}
    with pytest.raises(ValidationError) as refused:
        OrderRequest(**{**valid, **body})
    assert problem in str(refused.value)


def test_numbers_and_strings_are_read_exactly() -> None:
    request = OrderRequest(
        symbol="AAPL", qty=0.1, side="buy", type="limit", time_in_force="day", limit_price="190.10"
    )
    assert request.qty == D("0.1") and request.limit_price == D("190.10")
