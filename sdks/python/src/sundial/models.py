"""Typed views of the API's objects (API.md): jobs, triggers, runs, workers, list pages.

Each model keeps the server's JSON in `raw`, so fields added to the API later stay reachable
before the SDK names them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

from ._http import format_duration, format_time, parse_time
from .errors import SundialError

RunState = Literal["pending", "running", "succeeded", "failed", "timed_out", "cancelled", "skipped"]
#: States a run does not leave by itself.
FINISHED_STATES: frozenset[str] = frozenset({"succeeded", "failed", "timed_out", "cancelled", "skipped"})

T = TypeVar("T")


@dataclass
class Trigger:
    """When a job fires: `once` at a time, on a `cron` expression, or every `interval`.
    Build one with `Trigger.once`, `Trigger.cron` or `Trigger.interval`."""

    kind: Literal["once", "cron", "interval"]
    at: datetime | None = None
    expr: str | None = None
    timezone: str | None = None
    every: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    max_fires: int | None = None
    misfire: Literal["fire_once", "skip", "catch_up"] | None = None
    catch_up_limit: int | None = None
    calendars: list[str] | None = None
    # Set by the server:
    id: str | None = None
    next_fire_at: datetime | None = None
    fires: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def once(cls, at: datetime | str, **options: Any) -> Trigger:
        """Fire once at `at`."""
        return cls(kind="once", at=parse_time(format_time(at)), **options)

    @classmethod
    def cron(cls, expr: str, timezone: str | None = None, **options: Any) -> Trigger:
        """Fire on a 5- or 6-field cron expression, read in `timezone` (default UTC)."""
        return cls(kind="cron", expr=expr, timezone=timezone, **options)

    @classmethod
    def interval(cls, every: str | float | timedelta, **options: Any) -> Trigger:
        """Fire every `every` (a humantime string, or seconds)."""
        return cls(kind="interval", every=format_duration(every), **options)

    def to_json(self) -> dict[str, Any]:
        """The trigger as a request body part (unset fields left out)."""
        out: dict[str, Any] = {"kind": self.kind}
        for key in ("expr", "timezone", "every", "max_fires", "misfire", "catch_up_limit", "calendars"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        for key in ("at", "start_at", "end_at"):
            value = getattr(self, key)
            if value is not None:
                out[key] = format_time(value)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Trigger:
        """A trigger as the server returns it."""
        return cls(
            kind=d["kind"],
            at=parse_time(d.get("at")),
            expr=d.get("expr"),
            timezone=d.get("timezone"),
            every=d.get("every"),
            start_at=parse_time(d.get("start_at")),
            end_at=parse_time(d.get("end_at")),
            max_fires=d.get("max_fires"),
            misfire=d.get("misfire"),
            catch_up_limit=d.get("catch_up_limit"),
            calendars=d.get("calendars"),
            id=d.get("id"),
            next_fire_at=parse_time(d.get("next_fire_at")),
            fires=d.get("fires"),
            raw=d,
        )


@dataclass
class RetryPolicy:
    """How often and how soon a failed run is tried again."""

    max_attempts: int | None = None
    initial_delay: str | None = None
    max_delay: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The policy as a request body part."""
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class Job:
    """A job: what to run (`handler`, `payload`) and when (`triggers`)."""

    id: str
    name: str
    namespace: str
    handler: str
    payload: Any
    priority: int
    paused: bool
    triggers: list[Trigger]
    retry: RetryPolicy | None
    timeout: str | None
    overlap: str | None
    idempotency_key: str | None
    created_at: datetime | None
    updated_at: datetime | None
    next_fire_time: datetime | None
    running: bool
    last_start_time: datetime | None
    last_end_time: datetime | None
    last_worker: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Job:
        """A job as the server returns it."""
        retry = d.get("retry")
        return cls(
            id=d["id"],
            name=d.get("name") or "",
            namespace=d.get("namespace") or "default",
            handler=d["handler"],
            payload=d.get("payload"),
            priority=d.get("priority") or 0,
            paused=bool(d.get("paused")),
            triggers=[Trigger.from_json(t) for t in d.get("triggers") or []],
            retry=RetryPolicy(**{k: retry.get(k) for k in ("max_attempts", "initial_delay", "max_delay")})
            if isinstance(retry, dict)
            else None,
            timeout=d.get("timeout"),
            overlap=d.get("overlap"),
            idempotency_key=d.get("idempotency_key"),
            created_at=parse_time(d.get("created_at")),
            updated_at=parse_time(d.get("updated_at")),
            next_fire_time=parse_time(d.get("next_fire_time")),
            running=bool(d.get("running")),
            last_start_time=parse_time(d.get("last_start_time")),
            last_end_time=parse_time(d.get("last_end_time")),
            last_worker=d.get("last_worker"),
            raw=d,
        )


@dataclass
class Run:
    """One execution of a job (retries are further attempts of the same run)."""

    id: str
    job_id: str
    trigger_id: str | None
    scheduled_for: datetime | None
    state: RunState
    attempt: int
    worker_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    output: Any
    error: str | None
    reason: str | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> bool:
        """True once the run is in a state it does not leave by itself."""
        return self.state in FINISHED_STATES

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Run:
        """A run as the server returns it."""
        return cls(
            id=d["id"],
            job_id=d["job_id"],
            trigger_id=d.get("trigger_id"),
            scheduled_for=parse_time(d.get("scheduled_for")),
            state=d["state"],
            attempt=d.get("attempt") or 0,
            worker_id=d.get("worker_id"),
            started_at=parse_time(d.get("started_at")),
            finished_at=parse_time(d.get("finished_at")),
            output=d.get("output"),
            error=d.get("error"),
            reason=d.get("reason"),
            raw=d,
        )


@dataclass
class WorkerInfo:
    """A worker as `GET /v1/workers` lists it."""

    id: str
    name: str
    handlers: list[str]
    capacity: int
    state: str
    last_heartbeat: datetime | None
    running: int
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WorkerInfo:
        """A worker as the server returns it."""
        return cls(
            id=d["id"],
            name=d.get("name") or "",
            handlers=list(d.get("handlers") or []),
            capacity=d.get("capacity") or 0,
            state=d.get("state") or "",
            last_heartbeat=parse_time(d.get("last_heartbeat")),
            running=d.get("running") or 0,
            raw=d,
        )


@dataclass
class Page(Generic[T]):
    """One page of a list; pass `next_cursor` as `cursor` for the next (None = last page)."""

    items: list[T]
    next_cursor: str | None


@dataclass
class BatchItem:
    """One item of a batch submit: the job on 200/201, else the error."""

    status: int
    job: Job | None
    error: SundialError | None = None
