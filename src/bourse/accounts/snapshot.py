"""The accounts core's state as bytes, and back: what the accounts service snapshots.

Ledgers (cash, positions, reservations, replace holds), open orders, halts and the
client order ids already used, encoded with msgspec (the ledger's dataclasses as they are).
Decimals travel as their exact text, so `1.50` comes back as `1.50`, not `1.5`; dictionaries
keep their order. The restored core has the same `state_digest()` and answers every later
event with the same outputs, byte for byte.

Instruments and limits (`AccountsConfig`) are configuration, not state: the service passes
them again when it restores.
"""

from __future__ import annotations

import msgspec

from bourse.accounts.core import AccountsConfig, AccountsCore, OpenOrder
from bourse.accounts.ledger import Ledger
from bourse.errors import BourseError
from bourse.model.instruments import Instrument

FORMAT = 1


class AccountsSnapshotError(BourseError):
    """A snapshot cannot be restored (unreadable, or written in another format)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"cannot restore the accounts snapshot: {problem}")


class _Accounts(msgspec.Struct, frozen=True, kw_only=True):
    format: int
    ledgers: list[Ledger]
    halted: dict[str, str]
    open_orders: list[OpenOrder]
    # (account, client_order_id, order_id): JSON and msgpack maps want plain keys.
    client_order_ids: list[tuple[str, str, str]]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Accounts)


def dump(core: AccountsCore) -> bytes:
    """The core's whole state (msgpack)."""
    return _encoder.encode(
        _Accounts(
            format=FORMAT,
            ledgers=list(core.ledgers.values()),
            halted=dict(core.halted),
            open_orders=list(core.open_orders.values()),
            client_order_ids=[
                (account, client_id, order_id)
                for (account, client_id), order_id in core.client_order_ids.items()
            ],
        )
    )


def load(
    data: bytes, instruments: tuple[Instrument, ...], config: AccountsConfig | None = None
) -> AccountsCore:
    """A new core for `instruments` and `config` holding the state `dump` saved."""
    try:
        state = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise AccountsSnapshotError(f"unreadable ({exc})") from exc
    if state.format != FORMAT:
        raise AccountsSnapshotError(f"format {state.format}; this version reads {FORMAT}")
    core = AccountsCore(instruments, config)
    core.ledgers = {ledger.account_id: ledger for ledger in state.ledgers}
    core.halted = dict(state.halted)
    core.open_orders = {order.order_id: order for order in state.open_orders}
    core.client_order_ids = {
        (account, client_id): order_id for account, client_id, order_id in state.client_order_ids
    }
    return core
