from __future__ import annotations

import msgspec
import pytest

from bourse.analytics.messages import AnalyticsMessage, decode
from bourse.model import marketdata
from tests.analytics.factories import quote


def test_every_analytics_message_has_its_own_type_and_a_json_schema() -> None:
    schema = msgspec.json.schema(AnalyticsMessage)
    assert set(schema["$defs"]) == {
        "Bar",
        "BarIndicators",
        "VwapUpdate",
        "Nbbo",
        "ArbitrageOpened",
        "ArbitrageClosed",
    }


def test_market_data_is_not_an_analytics_message() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode(marketdata.encode(quote("10.00", "10.02", 0)))
