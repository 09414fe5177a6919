from __future__ import annotations

import itertools
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bourse.errors import DataFormatError
from bourse.feed.history_files import read_csv_text, read_file, sample_stocks
from bourse.feed.runner import replayed_batches
from bourse.model.marketdata import Quote, Trade


def test_sample_stocks_ship_real_daily_data() -> None:
    messages = sample_stocks(venue="hist", symbols=["AAPL"])
    assert {m.symbol for m in messages} == {"AAPL"}
    first = messages[0]
    # 2000-03-01 AAPL: open 118.56, high 132.06, low 118.5, close 130.31 (an up day).
    assert isinstance(first, Trade)
    assert [m.price for m in messages[:4]] == [
        Decimal("118.56"),
        Decimal("118.5"),
        Decimal("132.06"),
        Decimal("130.31"),
    ]
    assert [m.seq for m in messages[:4]] == [1, 2, 3, 4]
    assert all(a.ts < b.ts for a, b in itertools.pairwise(messages))


def test_trades_quotes_and_venues_from_csv() -> None:
    text = (
        "ts,symbol,venue,price,size\n"
        "2024-03-01T14:30:00.5Z,aapl,nyse,180.10,100\n"
        "2024-03-01T14:30:00Z,AAPL,,180.00,50\n"
    )
    messages = read_csv_text(text, source="t.csv", venue="hist")
    assert [(m.venue, m.price, m.seq) for m in messages if isinstance(m, Trade)] == [
        ("hist", Decimal("180.00"), 1),
        ("nyse", Decimal("180.10"), 1),
    ]
    quotes = read_csv_text(
        "ts,symbol,bid,ask,bid_size,ask_size\n1700000000000000000,BTC/USD,1.5,1.6,2,3\n",
        source="q.csv",
        venue="hist",
    )
    assert isinstance(quotes[0], Quote)
    assert quotes[0].symbol == "BTC-USD" and quotes[0].ts == 1_700_000_000_000_000_000


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("symbol,price,size\nAAPL,1,1\n", "missing column(s) ts"),
        ("ts,symbol,foo\n2024-01-01,AAPL,1\n", "needs trade columns"),
        ("ts,symbol,price,size\n2024-01-01,AAPL,abc,1\n", "row 2: price 'abc' is not a number"),
        ("ts,symbol,price,size\n2024-01-01,AAPL,NaN,1\n", "row 2: price NaN must be positive"),
        ("ts,symbol,price,size\n2024-01-01,AAPL,-5,1\n", "price -5 must be positive"),
        ("ts,symbol,price,size\nyesterday,AAPL,5,1\n", "neither ISO-8601"),
        ("ts,symbol,price,size\n2024-01-01,A.B,5,1\n", "row 2"),
        (
            "ts,symbol,bid,ask,bid_size,ask_size\n2024-01-01,X,2,1,1,1\n",
            "bid 2 is above ask 1",
        ),
    ],
)
def test_bad_rows_are_reported_precisely(text: str, problem: str) -> None:
    with pytest.raises(DataFormatError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        read_csv_text(text, source="bad.csv", venue="hist")


def test_parquet_files_read_like_csv(tmp_path: Path) -> None:
    table = pa.table(
        {
            "ts": ["2024-03-01T14:30:00Z", "2024-03-01T14:30:01Z"],
            "symbol": ["MSFT", "MSFT"],
            "price": ["400.10", "400.20"],
            "size": ["10", "20"],
        }
    )
    path = tmp_path / "ticks.parquet"
    pq.write_table(table, path)
    messages = read_file(path, venue="hist")
    assert [m.price for m in messages if isinstance(m, Trade)] == [
        Decimal("400.10"),
        Decimal("400.20"),
    ]
    with pytest.raises(DataFormatError, match="no such file"):
        read_file(tmp_path / "missing.csv", venue="hist")


def test_replay_paces_by_historical_time() -> None:
    messages = read_csv_text(
        "ts,symbol,price,size\n"
        "2024-01-01T00:00:00Z,X,1,1\n2024-01-01T00:00:00Z,X,2,1\n2024-01-01T00:01:00Z,X,3,1\n",
        source="t",
        venue="hist",
    )
    batches = list(replayed_batches(messages, speed=60))
    assert [(b.due_s, len(b.messages)) for b in batches] == [(0.0, 2), (1.0, 1)]
    assert [b.due_s for b in replayed_batches(messages, speed=0)] == [0.0, 0.0]
