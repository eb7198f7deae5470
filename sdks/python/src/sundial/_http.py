"""HTTP plumbing shared by the client and the worker: a small pool of keep-alive connections,
JSON in and out, errors as `SundialError`, and humantime durations."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping
from urllib.parse import quote, urlencode, urlsplit

from .errors import SundialError, Unavailable

_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "secs": 1.0, "m": 60.0, "min": 60.0,
    "mins": 60.0, "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "d": 86400.0, "day": 86400.0, "days": 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zµ]+)")


def parse_duration(text: str) -> float:
    """Seconds in a humantime duration (`"250ms"`, `"1h 30m"`); ValueError when unreadable."""
    parts = _PART.findall(text.strip().lower())
    if not parts or any(unit not in _UNITS for _, unit in parts):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def format_duration(value: str | float | int | timedelta) -> str:
    """A duration for the wire: strings pass through, numbers are seconds."""
    if isinstance(value, str):
        return value
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time as an aware datetime (Python 3.10's fromisoformat needs help with `Z`
    and with more than six fractional digits)."""
    if value is None:
        return None
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", value.strip(), re.IGNORECASE)
    if not m:
        return datetime.fromisoformat(value)
    base, frac, tz = m.groups()
    frac = (frac or "")[:7]
    tz = "+00:00" if tz.upper() == "Z" else tz
    return datetime.fromisoformat(base + frac + tz).astimezone(timezone.utc)


def format_time(value: str | datetime) -> str:
    """A time for the wire (naive datetimes are taken as UTC)."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def segment(value: str) -> str:
    """One URL path segment (a `namespace/name` job reference keeps its `/` encoded)."""
    return quote(value, safe="")


class Transport:
    """JSON over HTTP/1.1 with a pool of keep-alive connections, safe to share across threads."""

    def __init__(self, server: str, token: str | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(server if "://" in server else "http://" + server)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"server: unsupported scheme {parts.scheme!r}")
        self.server = server.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        """A fresh connection of its own (for a long poll that another thread may cut)."""
        cls = _HTTPSConnection if self._https else _HTTPConnection
        return cls(self._host, self._port, timeout=timeout or self.timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        conn: http.client.HTTPConnection | None = None,
    ) -> Any:
        """Send one request; the parsed JSON answer (None when empty). Raises `SundialError`
        for an error status and `Unavailable` when the server cannot be reached."""
        url = self._prefix + path
        if query:
            q = {k: _query_value(v) for k, v in query.items() if v is not None}
            if q:
                url += "?" + urlencode(q)
        data = None if body is None else json.dumps(body).encode()
        own = conn is None
        for attempt in (1, 2):
            c = self._take() if own else conn
            assert c is not None
            reused = c.sock is not None
            c.timeout = timeout or self.timeout
            if c.sock is not None:
                c.sock.settimeout(c.timeout)
            try:
                c.request(method, url, body=data, headers=self._headers)
                resp = c.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                c.close()
                # A pooled connection the server closed while idle: retry once on a new one.
                if reused and attempt == 1:
                    continue
                raise Unavailable(f"{method} {path}: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                c.close()
                raise Unavailable(f"{method} {path}: {e}") from e
            if own:
                self._give(c, resp)
            return _answer(method, path, resp.status, raw)
        raise AssertionError("unreachable")

    def _take(self) -> http.client.HTTPConnection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self.connection()

    def _give(self, c: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        if resp.will_close:
            c.close()
            return
        with self._lock:
            if len(self._idle) < 64:
                self._idle.append(c)
                return
        c.close()

    def close(self) -> None:
        """Close the idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()


class _HTTPConnection(http.client.HTTPConnection):
    # http.client writes the headers and the body separately: without TCP_NODELAY, Nagle's
    # algorithm holds the body until the server's delayed ACK (tens of ms per request).
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def cut(conn: http.client.HTTPConnection) -> None:
    """Abort a request in flight on `conn` from another thread (its reader sees the socket close)."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        return format_time(v)
    return str(v)


def _answer(method: str, path: str, status: int, raw: bytes) -> Any:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if 200 <= status < 300:
        return body
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        raise SundialError(str(err.get("code", "error")), str(err.get("message", "")), status)
    text = raw[:200].decode("utf-8", "replace")
    raise SundialError("http_error", f"{method} {path}: HTTP {status}: {text}", status)
