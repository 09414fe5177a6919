"""Where a running platform can be found: `.bourse/runtime.json` and `.bourse/cluster.json`.

`bourse up` writes what it serves to `runtime.json`, `bourse cluster up` its nodes to
`cluster.json`; every other command connects through them unless `--nats URL` or
`BOURSE_NATS_URL` says otherwise. Each file is owned by the process named in it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import msgspec

from bourse.errors import BourseError, ConfigError

HOME_ENV = "BOURSE_HOME"
Kind = Literal["runtime", "cluster"]
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
    # The demo account's id and API key (a local convenience: the file is private, 0600).
    account_id: str | None = None
    api_key_id: str | None = None
    api_secret_key: str | None = None
    # An admin key for `bourse accounts create` and the /admin routes.
    admin_key_id: str | None = None
    admin_secret_key: str | None = None


def home() -> Path:
    """The platform's local directory: $BOURSE_HOME, else `.bourse` in the current directory."""
    return Path(os.environ.get(HOME_ENV) or ".bourse").absolute()


def runtime_path(base: Path | None = None, kind: Kind = "runtime") -> Path:
    return (base or home()) / f"{kind}.json"


def write_runtime(runtime: Runtime, base: Path | None = None, kind: Kind = "runtime") -> Path:
    path = runtime_path(base, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(runtime)))
    tmp.chmod(0o600)  # it may hold API secrets
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def read_runtime(base: Path | None = None, kind: Kind = "runtime") -> Runtime | None:
    path = runtime_path(base, kind)
    try:
        return msgspec.json.decode(path.read_bytes(), type=Runtime)
    except FileNotFoundError:
        return None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(
            str(path), "unreadable", f"a file written by `bourse up` ({exc})"
        ) from exc


def read_live_runtime(base: Path | None = None, kind: Kind = "runtime") -> Runtime | None:
    """The runtime file's contents if the process that wrote it is still alive."""
    runtime = read_runtime(base, kind)
    if runtime is None:
        return None
    try:
        os.kill(runtime.pid, 0)
    except ProcessLookupError:
        return None  # a stale file from a process that died
    except PermissionError:
        pass  # alive, but someone else's
    return runtime


def refuse_if_running(base: Path, kind: Kind = "runtime") -> None:
    """Raise if a live process already serves from `base` (its `kind` file names it)."""
    existing = read_live_runtime(base, kind)
    if existing is not None:
        what = "a cluster" if kind == "cluster" else "a platform"
        raise ConfigError(
            "home directory",
            str(base),
            f"a directory not in use: pid {existing.pid} already serves {what} at "
            f"{existing.nats_url} from it (stop it, or set BOURSE_HOME)",
        )


def remove_runtime(
    base: Path | None = None, *, pid: int | None = None, kind: Kind = "runtime"
) -> None:
    """Remove a runtime file, only if it still describes process `pid` (when given)."""
    path = runtime_path(base, kind)
    current = read_runtime(base, kind) if path.exists() else None
    if current is not None and (pid is None or current.pid == pid):
        path.unlink(missing_ok=True)


def resolve_nats_url(explicit: str | None, base: Path | None = None) -> str:
    """--nats, then $BOURSE_NATS_URL, then the running platform's, then the cluster's file:
    in `base` first when given, then in the default home."""
    if explicit:
        return explicit
    if env := os.environ.get(NATS_URL_ENV):
        return env
    kinds: tuple[Kind, ...] = ("runtime", "cluster")
    for where in (base, None) if base is not None else (None,):
        for kind in kinds:
            runtime = read_live_runtime(where, kind)
            if runtime is not None:
                return runtime.nats_url
    raise NotRunningError(runtime_path(base))
