"""Where a running platform can be found: `.bourse/runtime.json`.

`bourse up` writes what it serves there; every other command connects through it unless
`--nats URL` or `BOURSE_NATS_URL` says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from bourse.errors import BourseError, ConfigError

HOME_ENV = "BOURSE_HOME"
NATS_URL_ENV = "BOURSE_NATS_URL"


class NotRunningError(BourseError):
    """No NATS URL was given and no running platform was found."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"no platform to connect to: start one with `bourse up` (or `make run`), pass "
            f"--nats URL, or set ${NATS_URL_ENV} (no {path})"
        )


class Runtime(msgspec.Struct, kw_only=True):
    nats_url: str
    pid: int
    started_at: str
    http_url: str | None = None
    monitor_url: str | None = None
    cluster: bool = False
    api_key_id: str | None = None
    api_secret_key: str | None = None


def home() -> Path:
    """The platform's local directory: $BOURSE_HOME, else `.bourse` in the current directory."""
    return Path(os.environ.get(HOME_ENV) or ".bourse").absolute()


def runtime_path(base: Path | None = None) -> Path:
    return (base or home()) / "runtime.json"


def write_runtime(runtime: Runtime, base: Path | None = None) -> Path:
    path = runtime_path(base)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(runtime)))
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def read_runtime(base: Path | None = None) -> Runtime | None:
    path = runtime_path(base)
    try:
        return msgspec.json.decode(path.read_bytes(), type=Runtime)
    except FileNotFoundError:
        return None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(
            str(path), "unreadable", f"a file written by `bourse up` ({exc})"
        ) from exc


def remove_runtime(base: Path | None = None, *, pid: int | None = None) -> None:
    """Remove the runtime file, only if it still describes process `pid` (when given)."""
    path = runtime_path(base)
    current = read_runtime(base) if path.exists() else None
    if current is not None and (pid is None or current.pid == pid):
        path.unlink(missing_ok=True)


def resolve_nats_url(explicit: str | None) -> str:
    """--nats, then $BOURSE_NATS_URL, then the running platform's runtime file."""
    if explicit:
        return explicit
    if env := os.environ.get(NATS_URL_ENV):
        return env
    runtime = read_runtime()
    if runtime is None:
        raise NotRunningError(runtime_path())
    return runtime.nats_url
