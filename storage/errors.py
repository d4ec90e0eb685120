"""Errors raised by the storage layer; app/http/errors.py maps each to an HTTP answer."""


class StorageError(Exception):
    """Base class of every error the storage layer raises on purpose."""


class NotFound(StorageError):
    """The row asked for does not exist (or is not visible to the caller)."""


class Conflict(StorageError):
    """The change collides with existing state (a unique value, a finished transition)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class Unavailable(StorageError):
    """A backing service (Postgres, Redis, Kafka, ClickHouse) cannot be reached."""

    def __init__(self, service: str, detail: str = ""):
        super().__init__(f"{service} unavailable: {detail}" if detail else f"{service} unavailable")
        self.service = service
