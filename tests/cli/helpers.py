"""Helpers for end-to-end tests that drive the real `bourse` command in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

BOURSE = str(Path(sys.executable).parent / "bourse")


def bourse(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BOURSE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def isolated_env(home: Path) -> dict[str, str]:
    """The environment less any BOURSE_* setting, with its own platform home."""
    values = {k: v for k, v in os.environ.items() if not k.startswith("BOURSE_")}
    values["BOURSE_HOME"] = str(home)
    values["BOURSE_API_PORT"] = "0"  # a free port for the gateway, never the default 8000
    values["COLUMNS"] = "160"  # rich tables at a known width
    return values


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def command_line(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}") / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll a condition with a deadline (waiting on another process: no event to await)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Logged:
    """A `bourse ...` process, its output in a file (a pipe nobody reads would fill)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.env = env
        self._out: IO[str] = log.open("w")
        self.process = subprocess.Popen(
            [BOURSE, *args], env=env, stdout=self._out, stderr=subprocess.STDOUT
        )

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_for_output(self, text: str, what: str, timeout: float = 60.0) -> None:
        """Until `text` is in the output; the process must still run."""
        wait_for(
            lambda: text in self.output or self.process.poll() is not None, what, timeout=timeout
        )
        assert self.process.poll() is None, self.output

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._out.close()
