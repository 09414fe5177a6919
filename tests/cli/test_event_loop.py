"""The long-running commands' event loop: uvloop unless BOURSE_EVENT_LOOP=asyncio; how
they take signals."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Coroutine
from typing import Any

import pytest

from bourse.cli.common import EVENT_LOOP_ENV, run_loop, run_until_signalled


async def _loop_kind() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def test_commands_run_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    assert run_loop(_loop_kind()) == "uvloop"


@pytest.mark.parametrize("value", ["asyncio", " ASYNCIO "])
def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, value)
    assert run_loop(_loop_kind()) == "asyncio"


async def _signalled(first: signal.Signals, second: signal.Signals, stop: asyncio.Event) -> str:
    """Send ourselves `first`, wait for the graceful stop it asks, then `second`; return once
    a later signal of our own (SIGUSR1, handled after `second`) has been seen."""
    seen = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, seen.set)
    try:
        os.kill(os.getpid(), first)
        await stop.wait()
        os.kill(os.getpid(), second)
        os.kill(os.getpid(), signal.SIGUSR1)
        await seen.wait()
        await asyncio.sleep(0)  # one more turn: a cancellation would land here
        return "finished its stop"
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)


def test_a_second_sigterm_does_not_cut_a_graceful_stop_short() -> None:
    # Supervisors repeat SIGTERM (systemd signals every process; bourse up its workers too).
    def main(stop: asyncio.Event) -> Coroutine[Any, Any, str]:
        return _signalled(signal.SIGTERM, signal.SIGTERM, stop)

    assert run_until_signalled(main) == "finished its stop"


def test_a_second_ctrl_c_interrupts_at_once() -> None:
    def main(stop: asyncio.Event) -> Coroutine[Any, Any, str]:
        return _signalled(signal.SIGINT, signal.SIGINT, stop)

    with pytest.raises(asyncio.CancelledError):
        run_until_signalled(main)
