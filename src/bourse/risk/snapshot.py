"""The risk core's state as bytes, and back: what a risk fold service snapshots.

Per account the ledger (cash, realized P&L, positions), the equity landmarks, recent order
times, rule levels, the last fill applied per symbol, the halt and kill-switch flags and the
alert and halt counters (output ids continue from them); for the core the marks, its clock
and the last trading day closed. Encoded with msgpack; Decimals travel as their exact text.
The restored core has the same `state_digest()` and answers every later input with the same
outputs, ids included.

The rules (`RiskConfig`) are configuration, not state: the service passes them again when it
restores, and a changed limit applies from the next input on.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal

import msgspec

from bourse.accounts.ledger import Ledger
from bourse.errors import BourseError
from bourse.risk.core import RiskCore
from bourse.risk.levels import Level
from bourse.risk.rules import RiskConfig, RuleName
from bourse.risk.state import AccountRisk

FORMAT = 1
_LEVELS = frozenset(int(level) for level in Level if level is not Level.NORMAL)


class RiskSnapshotError(BourseError):
    """A snapshot cannot be restored (unreadable, or written in another format)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"cannot restore the risk snapshot: {problem}")


class _Account(msgspec.Struct, frozen=True, kw_only=True):
    ledger: Ledger
    peak_equity: Decimal
    day_start_equity: Decimal
    order_times: list[int]
    levels: dict[RuleName, int]
    fills_seen: dict[str, int]
    halted: bool
    kill_switch_tripped: bool
    alerts_raised: int
    halts_requested: int


class _Risk(msgspec.Struct, frozen=True, kw_only=True):
    format: int
    accounts: list[_Account]
    marks: dict[str, Decimal]
    clock: int
    last_closed_day: str


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Risk)


def dump(core: RiskCore) -> bytes:
    """The core's whole state (msgpack)."""
    return _encoder.encode(
        _Risk(
            format=FORMAT,
            accounts=[
                _Account(
                    ledger=account.ledger,
                    peak_equity=account.peak_equity,
                    day_start_equity=account.day_start_equity,
                    order_times=list(account.order_times),
                    levels={rule: int(level) for rule, level in account.levels.items()},
                    fills_seen=dict(account.fills_seen),
                    halted=account.halted,
                    kill_switch_tripped=account.kill_switch_tripped,
                    alerts_raised=account.alerts_raised,
                    halts_requested=account.halts_requested,
                )
                for account in core.accounts.values()
            ],
            marks=dict(core.marks),
            clock=core.clock,
            last_closed_day=core.last_closed_day,
        )
    )


def load(data: bytes, config: RiskConfig | None = None) -> RiskCore:
    """A new core with `config` holding the state `dump` saved."""
    try:
        state = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RiskSnapshotError(f"unreadable ({exc})") from exc
    if state.format != FORMAT:
        raise RiskSnapshotError(f"format {state.format}; this version reads {FORMAT}")
    if any(level not in _LEVELS for saved in state.accounts for level in saved.levels.values()):
        raise RiskSnapshotError(f"a rule level outside {sorted(_LEVELS)}")
    core = RiskCore(config)
    core.accounts = {
        saved.ledger.account_id: AccountRisk(
            saved.ledger,
            peak_equity=saved.peak_equity,
            day_start_equity=saved.day_start_equity,
            order_times=deque(saved.order_times),
            levels={rule: Level(level) for rule, level in saved.levels.items()},
            fills_seen=dict(saved.fills_seen),
            halted=saved.halted,
            kill_switch_tripped=saved.kill_switch_tripped,
            alerts_raised=saved.alerts_raised,
            halts_requested=saved.halts_requested,
        )
        for saved in state.accounts
    }
    core.marks = dict(state.marks)
    core.clock = state.clock
    core.last_closed_day = state.last_closed_day
    core.rebuild_holders()
    return core
