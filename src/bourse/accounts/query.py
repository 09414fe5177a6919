"""The accounts service answers for its ledgers: `accounts.ledger.<account_id>` request/reply.

The ledger is the one place that knows an account's buying power exactly (cash less what its
open orders reserve), so the gateway asks it rather than recomputing reservations from the
read model. The answer is the ledger as the fold has it at that moment, with the ORDERS
sequence it has read up to, so a caller can tell how current it is.

    reply = await nc.request(subjects.account_ledger("acc-1"), b"", timeout=2)
    summary = decode_summary(reply.data)     # LedgerSummary, or raises UnknownAccount
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bourse.accounts.core import AccountsCore
from bourse.errors import BourseError
from bourse.model import subjects


class PositionSummary(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: Decimal
    avg_entry_price: Decimal
    sellable: Decimal  # long shares not promised to open sell orders


class LedgerSummary(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="ledger"):
    account_id: str
    cash: Decimal
    reserved_cash: Decimal
    buying_power: Decimal
    realized_pnl: Decimal
    shorting_enabled: bool
    trading_blocked: bool
    blocked_reason: str | None
    open_orders: int
    positions: list[PositionSummary]
    as_of_sequence: int  # the ORDERS sequence the accounts service had read up to


class _Error(msgspec.Struct, frozen=True, tag_field="kind", tag="error"):
    error: str
    message: str


class UnknownAccount(BourseError):
    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        super().__init__(f"no account {account_id!r} in the ledger")


_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[LedgerSummary | _Error] = msgspec.json.Decoder(
    LedgerSummary | _Error
)


def summarize(core: AccountsCore, account_id: str, as_of_sequence: int) -> LedgerSummary | None:
    ledger = core.ledgers.get(account_id)
    if ledger is None:
        return None
    halted = core.halted.get(account_id)
    return LedgerSummary(
        account_id=account_id,
        cash=ledger.cash,
        reserved_cash=ledger.reserved_cash,
        buying_power=ledger.buying_power,
        realized_pnl=ledger.realized_pnl,
        shorting_enabled=ledger.shorting_enabled,
        trading_blocked=halted is not None,
        blocked_reason=halted,
        open_orders=sum(1 for o in core.open_orders.values() if o.account_id == account_id),
        positions=[
            PositionSummary(
                symbol=symbol,
                qty=position.qty,
                avg_entry_price=position.avg_entry_price,
                sellable=ledger.sellable(symbol),
            )
            for symbol, position in sorted(ledger.positions.items())
        ],
        as_of_sequence=as_of_sequence,
    )


def encode_answer(summary: LedgerSummary | None, account_id: str) -> bytes:
    if summary is None:
        return _encoder.encode(_Error("unknown_account", f"no account {account_id!r}"))
    return _encoder.encode(summary)


def decode_summary(payload: bytes) -> LedgerSummary:
    answer = _decoder.decode(payload)
    if isinstance(answer, _Error):
        raise UnknownAccount(answer.message)
    return answer


async def serve_ledger_queries(
    nc: NATS, core: Callable[[], AccountsCore], sequence: Callable[[], int]
) -> Subscription:
    """Answer `accounts.ledger.<id>` from the live core (`core()` is called per request: a
    restored snapshot replaces the core object)."""
    prefix = subjects.account_ledger("")

    async def on_request(msg: Msg) -> None:
        account_id = msg.subject[len(prefix) :]
        summary = summarize(core(), account_id, sequence())
        await msg.respond(encode_answer(summary, account_id))

    return await nc.subscribe(subjects.account_ledger("*"), queue="accounts", cb=on_request)
