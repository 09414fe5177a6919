"""The long-running commands' event loop: uvloop unless BOURSE_EVENT_LOOP=asyncio."""

from __future__ import annotations

import asyncio

import pytest

from bourse.cli.common import EVENT_LOOP_ENV, run_loop


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
