"""Alpaca's market-data stream on the wire: the feeds, the messages and their frames. Pure.

Bourse's messages become Alpaca's (`T` = `t` trade, `q` quote, `b` bar, and the control
messages `success`, `error`, `subscription`); every frame is a JSON array (a text frame) or a
MessagePack array (a binary frame) of one message, as Alpaca sends them:

    trade  {"T":"t","S":"AAPL","i":42,"x":"N","p":190.05,"s":100,"c":["@"],"z":"C","t":...}
    quote  {"T":"q","S":"AAPL","bx":"N","bp":190.00,"bs":300,"ax":"Q","ap":190.10,"as":200,
            "c":["R"],"z":"C","t":...}
    bar    {"T":"b","S":"AAPL","o":..,"h":..,"l":..,"c":..,"v":..,"t":...,"n":12,"vw":..}

Prices and sizes are JSON numbers written from the exact decimals (`190.05`, never
`190.04999`); MessagePack has no decimal type, so there they are floats, as Alpaca's are.
`t` is RFC 3339 with nanoseconds in JSON and a MessagePack timestamp (extension -1, which
`msgpack.unpackb` returns as `Timestamp`) in MessagePack.

A WebSocket frame from a server is not masked, so one frame's bytes serve every client that
negotiated the same codec: `frame()` builds them once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Literal

import msgspec

from bourse.analytics.bars import Bar
from bourse.analytics.nbbo import Nbbo
from bourse.model.instruments import AssetClass
from bourse.model.marketdata import Quote, Trade

Codec = Literal["json", "msgpack"]
Message = dict[str, Any]

TRADES, QUOTES, BARS = "trades", "quotes", "bars"

# ---- the feeds ----


@dataclass(frozen=True, slots=True)
class Feed:
    """One of Alpaca's stream paths and the Bourse data it carries (see
    docs/market-data-stream.md)."""

    name: str
    path: str
    asset_class: AssetClass
    channels: tuple[str, ...]  # what a client may subscribe to
    reply_channels: tuple[str, ...]  # what the `subscription` message lists, as Alpaca's
    mirrors_trades: tuple[str, ...] = ()  # channels Alpaca subscribes along with trades
    available: bool = True  # False: Alpaca has it, Bourse does not (409 at authentication)

    @property
    def crypto(self) -> bool:
        return self.asset_class is AssetClass.CRYPTO


_STOCK_REPLY = (
    TRADES,
    QUOTES,
    BARS,
    "updatedBars",
    "dailyBars",
    "statuses",
    "lulds",
    "corrections",
    "cancelErrors",
)
_CRYPTO_REPLY = (TRADES, QUOTES, "orderbooks", BARS, "updatedBars", "dailyBars")
_OFFERED = (TRADES, QUOTES, BARS)


def _stock(name: str, *, available: bool = True) -> Feed:
    return Feed(
        name=name,
        path=f"/v2/{name}",
        asset_class=AssetClass.US_EQUITY,
        channels=_OFFERED,
        reply_channels=_STOCK_REPLY,
        mirrors_trades=("corrections", "cancelErrors"),
        available=available,
    )


IEX = _stock("iex")
SIP = _stock("sip")
CRYPTO = Feed(
    name="crypto",
    path="/v1beta3/crypto/us",
    asset_class=AssetClass.CRYPTO,
    channels=_OFFERED,
    reply_channels=_CRYPTO_REPLY,
)
# Alpaca's other stock feeds: a client is told 409 "insufficient subscription" when it
# authenticates, which alpaca-py takes as final rather than reconnecting forever.
UNAVAILABLE = tuple(_stock(name, available=False) for name in ("delayed_sip", "otc", "boats"))
FEEDS: Final = (IEX, SIP, CRYPTO, *UNAVAILABLE)

# Every channel name of Alpaca's stock, crypto, option and news streams. One of these that a
# feed does not offer is error 410; any other key is error 400.
ALPACA_CHANNELS = frozenset(
    {*_STOCK_REPLY, *_CRYPTO_REPLY, "imbalances", "news", "orderbooks", "trades", "quotes"}
)

# ---- exchange codes ----

# Alpaca's one-letter codes for the real exchanges Bourse simulates; any other venue (Bourse's
# own, the crypto venues) is named as Bourse names it.
EXCHANGE_CODES: Final = {"nyse": "N", "nasdaq": "Q"}
TAPE: Final = "C"  # Bourse's equities are Nasdaq-listed names (tape C)
TRADE_CONDITIONS: Final = ("@",)  # regular sale
QUOTE_CONDITIONS: Final = ("R",)  # regular two-sided quote
_TAKER = {"buy": "B", "sell": "S"}


def exchange_code(venue: str) -> str:
    return EXCHANGE_CODES.get(venue, venue)


# ---- symbols ----


def alpaca_symbol(symbol: str, asset_class: AssetClass) -> str:
    """Alpaca's spelling of a Bourse symbol: `BTC/USD` for the pair `BTC-USD`."""
    return symbol.replace("-", "/") if asset_class is AssetClass.CRYPTO else symbol


# ---- timestamps ----


def rfc3339_ns(ns: int) -> str:
    """`2024-07-24T07:56:53.639713735Z`: RFC 3339 in UTC with nanoseconds, as Alpaca writes."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def msgpack_timestamp(ns: int) -> msgspec.msgpack.Ext:
    """The MessagePack timestamp extension (type -1): 64-bit form while it fits, else 96-bit."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    if 0 <= seconds < 1 << 34:
        return msgspec.msgpack.Ext(-1, ((nanos << 34) | seconds).to_bytes(8, "big"))
    return msgspec.msgpack.Ext(
        -1, nanos.to_bytes(4, "big") + seconds.to_bytes(8, "big", signed=True)
    )


def _time(ns: int, codec: Codec) -> Any:
    return rfc3339_ns(ns) if codec == "json" else msgpack_timestamp(ns)


# ---- Bourse messages as Alpaca's ----


def trade_message(trade: Trade, symbol: str, codec: Codec, asset_class: AssetClass) -> Message:
    if asset_class is AssetClass.CRYPTO:
        message: Message = {
            "T": "t",
            "S": symbol,
            "p": trade.price,
            "s": trade.size,
            "t": _time(trade.ts, codec),
            "i": trade.seq,
            "x": exchange_code(trade.venue),
        }
        taker = _TAKER.get(trade.side)
        if taker is not None:
            message["tks"] = taker
        return message
    return {
        "T": "t",
        "S": symbol,
        "i": trade.seq,
        "x": exchange_code(trade.venue),
        "p": trade.price,
        "s": trade.size,
        "c": TRADE_CONDITIONS,
        "t": _time(trade.ts, codec),
        "z": TAPE,
    }


def venue_quote_message(
    quote: Quote, symbol: str, codec: Codec, asset_class: AssetClass
) -> Message:
    code = exchange_code(quote.venue)
    return _quote(
        symbol,
        codec,
        asset_class,
        bid=(code, quote.bid, quote.bid_size),
        ask=(code, quote.ask, quote.ask_size),
        ts=quote.ts,
    )


def nbbo_quote_message(nbbo: Nbbo, symbol: str, codec: Codec, asset_class: AssetClass) -> Message:
    """The consolidated best bid and offer as a quote: each side names its first venue; a side
    without a fresh quote is 0 at 0, as Alpaca sends an empty side."""
    return _quote(
        symbol,
        codec,
        asset_class,
        bid=_side(nbbo.bid_venues, nbbo.bid, nbbo.bid_size),
        ask=_side(nbbo.ask_venues, nbbo.ask, nbbo.ask_size),
        ts=nbbo.ts,
    )


_ZERO = Decimal(0)
Side = tuple[str, Decimal, Decimal]


def _side(venues: list[str], price: Decimal | None, size: Decimal) -> Side:
    if price is None:
        return ("", _ZERO, _ZERO)
    return (exchange_code(venues[0]) if venues else "", price, size)


def _quote(
    symbol: str, codec: Codec, asset_class: AssetClass, *, bid: Side, ask: Side, ts: int
) -> Message:
    message: Message = {
        "T": "q",
        "S": symbol,
        "bx": bid[0],
        "bp": bid[1],
        "bs": bid[2],
        "ax": ask[0],
        "ap": ask[1],
        "as": ask[2],
    }
    if asset_class is not AssetClass.CRYPTO:
        message["c"] = QUOTE_CONDITIONS
        message["t"] = _time(ts, codec)
        message["z"] = TAPE
    else:
        message["t"] = _time(ts, codec)
    return message


def bar_message(bar: Bar, symbol: str, codec: Codec) -> Message:
    """A minute bar; `vw` is null for a bar made from quote mid-prices (no trade in it)."""
    return {
        "T": "b",
        "S": symbol,
        "o": bar.open,
        "h": bar.high,
        "l": bar.low,
        "c": bar.close,
        "v": bar.volume,
        "t": _time(bar.start_ts, codec),
        "n": bar.trade_count,
        "vw": bar.vwap,
    }


# ---- control messages ----

ERRORS: Final = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    407: "slow client",
    409: "insufficient subscription",
    410: "invalid subscribe action for this feed",
    500: "internal error",
}

CONNECTED: Final = {"T": "success", "msg": "connected"}
AUTHENTICATED: Final = {"T": "success", "msg": "authenticated"}


def error_message(code: int, detail: str | None = None) -> Message:
    """Alpaca's error: `msg` is Alpaca's own text for the code (clients match on it); `detail`,
    Bourse's addition, says what was wrong and what is accepted."""
    message: Message = {"T": "error", "code": code, "msg": ERRORS[code]}
    if detail:
        message["detail"] = detail
    return message


def subscription_message(feed: Feed, lists: Mapping[str, Iterable[str]]) -> Message:
    message: Message = {"T": "subscription"}
    trades = list(lists.get(TRADES, ()))
    for channel in feed.reply_channels:
        message[channel] = (
            trades if channel in feed.mirrors_trades else list(lists.get(channel, ()))
        )
    return message


# ---- encoding and frames ----

_json = msgspec.json.Encoder(decimal_format="number")
_msgpack = msgspec.msgpack.Encoder(decimal_format="number")

TEXT, BINARY = 0x1, 0x2


def encode(message: Message, codec: Codec) -> bytes:
    """One message as Alpaca frames it: an array of one."""
    return _json.encode((message,)) if codec == "json" else _msgpack.encode((message,))


def frame(payload: bytes, codec: Codec) -> bytes:
    """A complete, unmasked WebSocket frame (FIN set): text for JSON, binary for MessagePack."""
    first = 0x80 | (TEXT if codec == "json" else BINARY)
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 1 << 16:
        return bytes((first, 126)) + size.to_bytes(2, "big") + payload
    return bytes((first, 127)) + size.to_bytes(8, "big") + payload


def message_frame(message: Message, codec: Codec) -> bytes:
    return frame(encode(message, codec), codec)


# ---- what clients send ----

_json_decoder = msgspec.json.Decoder()
_msgpack_decoder = msgspec.msgpack.Decoder()


def decode_request(payload: bytes, binary: bool) -> Any:
    """A client's message, JSON or MessagePack whatever was negotiated (alpaca-py sends
    MessagePack in binary frames; others send JSON, in either kind of frame)."""
    if binary:
        try:
            return _msgpack_decoder.decode(payload)
        except msgspec.DecodeError:
            pass  # JSON in a binary frame
    return _json_decoder.decode(payload)
