"""Which stream sequences a consumer has already applied, so redelivery is harmless."""

from __future__ import annotations


class AppliedSequences:
    """The stream sequences a consumer has settled (applied, or dead-lettered).

    A bare high-water mark ("skip anything at or below the highest sequence applied") is only
    right when messages are applied strictly in stream order. A consumer that retries a
    failed message later (a nak with a delay) applies later messages first; the retried one
    then arrives below the high-water mark and must not be skipped. So this keeps the
    high-water mark for reporting, and decides with a floor plus the sequences applied above
    it: everything at or below `floor` is settled, and the floor advances to JetStream's ack
    floor (below which nothing is ever redelivered), which keeps the set small.

    Pure: no I/O. Not persisted: a stateful service that must not apply a message twice across
    restarts snapshots its own high-water mark with its state.
    """

    def __init__(self, floor: int = 0) -> None:
        self._floor = floor
        self._above: set[int] = set()
        self._high_water = 0

    @property
    def floor(self) -> int:
        return self._floor

    @property
    def high_water(self) -> int:
        """The highest stream sequence this instance has applied (0 before the first)."""
        return self._high_water

    def __contains__(self, sequence: int) -> bool:
        return sequence <= self._floor or sequence in self._above

    def __len__(self) -> int:
        """How many sequences are remembered above the floor."""
        return len(self._above)

    def add(self, sequence: int) -> None:
        if sequence > self._floor:
            self._above.add(sequence)
        self._high_water = max(self._high_water, sequence)

    def advance_floor(self, ack_floor: int) -> None:
        """Forget sequences at or below `ack_floor`: JetStream will not deliver them again."""
        if ack_floor <= self._floor:
            return
        self._floor = ack_floor
        self._above = {sequence for sequence in self._above if sequence > ack_floor}
