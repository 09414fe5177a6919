"""The exchange as a fold over one in-memory journal: accounts and engine cores together.

This is what the services do over the ORDERS stream, without NATS: each service reads the
journal in order, and what it publishes is appended to the same journal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from bourse.accounts.core import AccountsCore
from bourse.engine.core import EngineInput, MatchingEngine
from bourse.model import marketdata, orders, positions
from bourse.model.instruments import DEFAULT_UNIVERSE

Message = orders.OrdersEvent | positions.PositionChanged | marketdata.MarketData


class Exchange:
    def __init__(self) -> None:
        self.accounts = AccountsCore(DEFAULT_UNIVERSE)
        self.engine = MatchingEngine(DEFAULT_UNIVERSE)
        self.journal: list[tuple[str, Message]] = []
        self._read = 0
        self.digest = hashlib.sha256()

    def submit(self, requests: Iterable[tuple[str, orders.OrdersEvent]]) -> None:
        """Append requests (gateway side), then let the services run until quiet."""
        self.journal.extend(requests)
        self.run()

    def run(self) -> None:
        while self._read < len(self.journal):
            subject, message = self.journal[self._read]
            self._read += 1
            self.digest.update(subject.encode())
            self.digest.update(_encode(message))
            if not subject.startswith("orders."):
                continue
            assert not isinstance(message, (positions.PositionChanged,))
            outputs: list[tuple[str, Message]] = []
            outputs.extend(self.accounts.apply(message))  # type: ignore[arg-type]
            if subject.startswith("orders.validated.") or subject == "orders.session":
                assert isinstance(
                    message,
                    orders.OrderValidated
                    | orders.CancelValidated
                    | orders.ReplaceValidated
                    | orders.SessionClosed,
                )
                request: EngineInput = message
                outputs.extend(self.engine.apply(request))
            self.journal.extend(outputs)


def _encode(message: Message) -> bytes:
    import msgspec

    return msgspec.json.encode(message)
