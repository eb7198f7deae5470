"""Errors the SDK raises: the server's `{"error": {"code", "message"}}` with its HTTP status."""

from __future__ import annotations


class SundialError(Exception):
    """An error answer from the server (or `Unavailable` when there was none)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"HTTP {status} {code}: {message}")
        #: Machine-readable code, e.g. `not_found`, `stale_attempt`, `invalid_value`.
        self.code = code
        #: Human sentence naming the field at fault.
        self.message = message
        #: HTTP status, or None when the server could not be reached.
        self.status = status


class Unavailable(SundialError):
    """The server could not be reached (connection refused or cut, timeout)."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message, None)
