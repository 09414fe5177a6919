"""How commands log: text lines for a terminal (the default), or JSON lines for a machine.

    bourse up --log-format json          # or BOURSE_LOG_FORMAT=json for every command

A JSON line is one object per record, on stderr:

    {"ts": "2026-12-01T13:02:11.204Z", "level": "warning", "service": "bourse-up",
     "logger": "bourse.gateway.metrics", "message": "consumer ... is 12000 messages behind
     (threshold 10000)", "event": "consumer_lagging", "stream": "MARKET_DATA", ...}

`service` is the process (`bourse-up`, `bourse-feed`...), `logger` the module that logged,
and every field a call passes in `extra={...}` is a key of its own, so a log pipeline can
filter on `stream` or `event` without parsing the message. An exception's traceback is
under `exception`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from bourse.errors import ConfigError

LOG_FORMAT_ENV: Final = "BOURSE_LOG_FORMAT"
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# What every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, service, logger, message, extra fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self.fields: dict[str, str] = {}  # on every line, after `service`

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "ts": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            **self.fields,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def log_format(given: str | None = None) -> LogFormat:
    """`given`, else $BOURSE_LOG_FORMAT, else text; ConfigError for anything else."""
    text = (given or os.environ.get(LOG_FORMAT_ENV) or "text").strip().lower()
    for choice in LOG_FORMATS:
        if text == choice:
            return choice
    raise ConfigError("log format", given or text, ", ".join(LOG_FORMATS))


def configure(
    format: str | None = None,
    *,
    service: str = "bourse",
    level: int = logging.INFO,
    services: str | None = None,
) -> None:
    """Send every log record to stderr in `format` (see `log_format`), replacing the
    handlers configured before. `services`, for a process running some of the platform's
    (`bourse run`): shown in each text line, and a JSON line's `services` field, so the lines
    of `bourse up --processes`' workers tell which process wrote them."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format(format) == "json":
        formatter = JsonFormatter(service)
        if services:
            formatter.fields = {"services": services}
        handler.setFormatter(formatter)
    elif services:
        handler.setFormatter(
            logging.Formatter(TEXT_FORMAT.replace("%(name)s", f"[{services}] %(name)s"))
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
