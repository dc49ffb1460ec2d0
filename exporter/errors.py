"""The one exception hierarchy of sysinner-exporter.

Every error the package raises on purpose is an :class:`ExporterError`.
Driver errors are translated once, at the driver boundary, into
:class:`DriverError` or one of its subclasses, chained ``from`` the cause.
"""

from __future__ import annotations


class ExporterError(Exception):
    """Root of every error sysinner-exporter raises on purpose."""


class ConfigError(ExporterError):
    """A setting is missing, malformed or contradicts another."""


class StatsUnavailableError(ExporterError):
    """A stats source cannot read this container (files missing); another source may."""


class DriverError(ExporterError):
    """The container engine refused or failed a call.

    ``status`` is the engine's HTTP status when it answered, else ``None``.
    """

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message if status is None else f"{status}: {message}")
        self.status = status
        self.message = message


class EngineUnreachableError(DriverError):
    """The engine could not be reached at all (no socket, refused, TLS failure)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class DriverTimeoutError(DriverError):
    """The engine did not answer within the call's deadline."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class NotFoundError(DriverError):
    """The named container, image or network does not exist."""


class ConflictError(DriverError):
    """The engine refused because of the object's current state (name in use, running)."""


class PolicyRefusedError(ExporterError):
    """A well-formed request value this host's policy refuses; answered 4xx naming the field."""

    def __init__(self, field: str, message: str, *, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


class BusyError(ExporterError):
    """Too many operations of one kind are in flight; try again later (answered 429)."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
