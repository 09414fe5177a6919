"""The root of Bourse's exceptions.

Exceptions are for broken contracts (bad configuration, a broker that cannot be reached, a
stream whose settings conflict). Business rejections are events, never exceptions.
"""

from __future__ import annotations


class BourseError(Exception):
    """Root of every error Bourse raises on purpose."""


class ConfigError(BourseError):
    """A configuration value or command-line argument is invalid.

    The message names the setting, what was given, and what is accepted.
    """

    def __init__(self, setting: str, given: object, accepted: str) -> None:
        self.setting = setting
        self.given = given
        self.accepted = accepted
        super().__init__(f"invalid {setting}: {given!r}; accepted: {accepted}")


class BrokerError(BourseError):
    """The NATS server could not be started, reached or used."""


class StreamConfigConflict(BourseError):
    """An existing stream has a setting that cannot be changed in place."""

    def __init__(self, stream: str, field: str, existing: object, wanted: object) -> None:
        self.stream = stream
        self.field = field
        self.existing = existing
        self.wanted = wanted
        super().__init__(
            f"stream {stream}: {field} is {existing!r} on the server but Bourse wants {wanted!r}, "
            f"and NATS cannot change it in place; delete the stream (nats stream rm {stream}) "
            f"or point Bourse at another server"
        )


class DataFormatError(BourseError):
    """An input file (CSV, Parquet) does not have the documented format."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")
