"""The worker: register handlers, claim runs into free slots, heartbeat their leases, stop a
run on cancel, timeout, lost or unrenewable lease, complete it with its fencing token
`(worker_id, attempt)`, and drain on SIGTERM.

Leases and self-fencing: each held run has a local deadline, the monotonic instant at which
the claim or heartbeat that last renewed it was *sent* (for a long-poll claim, plus the
`waited_ms` the server reports having held it), plus the lease, minus a margin of a fifth of
the lease. The server started the lease no earlier, so the deadline falls before the server's
lease end whatever the wall clocks say. When it passes without a renewal, the handler is told
to stop and its result is dropped: by then another worker may hold the run.

Handlers run one thread each (so a blocking handler blocks only its slot); `async` handlers
run on one event loop thread shared by the worker. Python cannot kill a thread: a synchronous
handler that ignores `ctx.cancelled` keeps running after its run was settled, but its result
is never sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, TypeVar

from ._http import Transport, cut, format_duration, parse_duration, parse_time, segment
from .errors import SundialError, Unavailable

log = logging.getLogger("sundial.worker")

H = TypeVar("H")

# Why a run is stopped before its handler returned.
CANCELLED = "cancelled"  # the server asked (heartbeat `cancel`): report cancelled
TIMED_OUT = "timed_out"  # the job's timeout passed: report timed_out
LOST = "lost"  # the server says it is not ours (heartbeat `lost`, worker unknown): drop
FENCED = "fenced"  # the local lease deadline passed without renewal: drop
SHUTDOWN = "shutdown"  # drain timeout passed on shutdown: report failed (retried if it may)
_DROPPED = (LOST, FENCED)

BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0
CLAIM_SLACK = 30.0
DEREGISTER_BUDGET = 10.0


class HandlerError(Exception):
    """Raise from a handler to fail the run with `message`, still recording `output`."""

    def __init__(self, message: str, output: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.output = output


@dataclass
class RunContext:
    """What a handler knows about the run it executes."""

    run_id: str
    job_id: str
    attempt: int
    handler: str
    payload: Any
    scheduled_for: datetime | None
    #: The job's per-attempt timeout in seconds, or None.
    timeout: float | None
    #: Set when the handler must stop (cancel, timeout, lost or unrenewable lease, shutdown).
    cancelled: threading.Event = field(default_factory=threading.Event, repr=False)
    _reason: list[str] = field(default_factory=list, repr=False)

    def is_cancelled(self) -> bool:
        """True once the handler must stop."""
        return self.cancelled.is_set()

    @property
    def stop_reason(self) -> str | None:
        """Why it must stop: `cancelled`, `timed_out`, `lost`, `fenced` or `shutdown`."""
        return self._reason[-1] if self._reason else None

    def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early when told to stop; True when told to stop."""
        return self.cancelled.wait(seconds)


class _Run:
    """A held run: the claim, its context and its lease bookkeeping (guarded by the worker lock)."""

    def __init__(self, claimed: dict[str, Any], worker_id: str, deadline: float) -> None:
        self.id: str = claimed["run_id"]
        self.attempt: int = claimed["attempt"]
        self.worker_id = worker_id
        self.deadline = deadline
        self.claimed = claimed
        self.timeout_error: str | None = None
        try:
            timeout = parse_duration(claimed["timeout"]) if claimed.get("timeout") else None
        except ValueError:
            timeout, self.timeout_error = None, f"timeout: not a duration: {claimed['timeout']!r}"
        self.ctx = RunContext(
            run_id=self.id,
            job_id=claimed["job_id"],
            attempt=self.attempt,
            handler=claimed["handler"],
            payload=claimed.get("payload"),
            scheduled_for=parse_time(claimed.get("scheduled_for")),
            timeout=timeout,
        )
        self.started = time.monotonic()
        self.timeout_at = None if timeout is None else self.started + timeout
        self.stop: str | None = None
        self.stop_at = 0.0
        self.settled = False
        self.abandoned = False  # its handler overran its grace; settled without it
        self.future: concurrent.futures.Future[Any] | None = None


class _Backoff:
    def __init__(self) -> None:
        self.delay = BACKOFF_MIN

    def next(self) -> float:
        d = self.delay
        self.delay = min(self.delay * 2, BACKOFF_MAX)
        return d

    def reset(self) -> None:
        self.delay = BACKOFF_MIN


class Worker:
    """A worker process's handlers and the loop that feeds them runs.

    >>> worker = Worker("http://127.0.0.1:7070", capacity=8)
    >>> @worker.handler("send-email")
    ... def send_email(ctx):
    ...     return {"sent_to": ctx.payload["to"]}
    >>> worker.run()  # until SIGTERM / SIGINT or worker.stop()
    """

    def __init__(
        self,
        server: str = "http://127.0.0.1:7070",
        *,
        token: str | None = None,
        name: str | None = None,
        capacity: int = 4,
        claim_wait: float = 20.0,
        drain_timeout: float = 30.0,
        stop_grace: float = 5.0,
    ) -> None:
        """`capacity`: runs at once; `claim_wait`: seconds one claim long-polls; `drain_timeout`:
        on shutdown, how long running handlers may finish before they are told to stop;
        `stop_grace`: how long a stopped handler may take to return before its run is reported
        anyway."""
        self._http = Transport(server, token)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.capacity = max(1, capacity)
        self.claim_wait = claim_wait
        self.drain_timeout = drain_timeout
        self.stop_grace = stop_grace
        self._handlers: dict[str, Any] = {}
        # One lock, two conditions: `_lock` wakes the claim loop and the drain (slots freed),
        # `_monitor` wakes the monitor only when a run needs it sooner than planned.
        mutex = threading.RLock()
        self._lock = threading.Condition(mutex)
        self._monitor = threading.Condition(mutex)
        self._monitor_at = 0.0
        self._held: dict[str, _Run] = {}
        self._free = self.capacity
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._heartbeat_now = threading.Event()
        self._claim_conn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()
        self.worker_id: str | None = None
        self.lease = 0.0
        self.heartbeat_every = 0.0
        self.margin = 0.0

    # Registration of handlers

    def handler(self, name: str) -> Callable[[H], H]:
        """Decorator: serve runs of `name` with a function `f(ctx)` (sync or `async`), a class
        with a `run(self, ctx)` method (a new instance per run), or an object with `run(ctx)`."""

        def register(h: H) -> H:
            self.add_handler(name, h)
            return h

        return register

    def add_handler(self, name: str, handler: Any) -> None:
        """Serve runs of `name` with `handler` (see `handler`)."""
        if not (inspect.isclass(handler) or callable(handler) or callable(getattr(handler, "run", None))):
            raise TypeError(f"handler {name!r}: expected a function, a class with run(ctx), or an object with run(ctx)")
        self._handlers[name] = handler

    @property
    def handler_names(self) -> list[str]:
        """Names served, sorted."""
        return sorted(self._handlers)

    # Lifecycle

    def stop(self) -> None:
        """Begin a graceful shutdown: claim nothing new, let running handlers finish (up to
        `drain_timeout`), deregister. Safe from any thread and from signal handlers."""
        if not self._stopping.is_set():
            self._stopping.set()
            conn = self._claim_conn
            if conn is not None:
                cut(conn)  # end the long poll now
            with self._lock:
                self._lock.notify_all()

    def run(self, *, install_signal_handlers: bool = True) -> None:
        """Register, claim and execute runs until `stop()` (or SIGTERM/SIGINT when
        `install_signal_handlers` and called from the main thread); then drain and deregister."""
        previous: dict[signal.Signals, Any] = {}
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda *_: self.stop())
        try:
            self._run()
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)
            self._http.close()

    def _run(self) -> None:
        if not self._register():
            return
        threads = [
            threading.Thread(target=self._heartbeat_loop, name="sundial-heartbeat", daemon=True),
            threading.Thread(target=self._monitor_loop, name="sundial-monitor", daemon=True),
        ]
        for t in threads:
            t.start()
        self._claim_loop()
        self._drain()
        self._done.set()
        with self._lock:
            self._lock.notify_all()
            self._monitor.notify_all()
        self._heartbeat_now.set()
        for t in threads:
            t.join(timeout=5)
        self._deregister()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    def _register(self) -> bool:
        body = {"name": self.name, "handlers": self.handler_names, "capacity": self.capacity}
        backoff = _Backoff()
        while not self._stopping.is_set():
            try:
                me = self._http.request("POST", "/v1/workers", body)
            except Unavailable as e:
                log.warning("register: server unavailable (%s); retrying", e)
                self._stopping.wait(backoff.next())
                continue
            self.worker_id = me["id"]
            lease = parse_duration(me["lease"])
            if lease <= 0:
                raise SundialError("protocol", f"lease: must be positive, got {me['lease']!r}")
            every = parse_duration(me["heartbeat_interval"])
            self.lease, self.margin = lease, lease / 5
            # A heartbeat must be able to fail once and still renew before the deadline.
            limit = (lease - self.margin) / 2
            self.heartbeat_every = every if 0 < every <= limit else limit
            log.info(
                "registered as %s (lease %ss, heartbeat every %ss, handlers %s)",
                self.worker_id, lease, round(self.heartbeat_every, 3), ", ".join(self.handler_names),
            )
            return True
        return False

    def _deregister(self) -> None:
        if self.worker_id is None:
            return
        started, backoff = time.monotonic(), _Backoff()
        while True:
            try:
                self._http.request("DELETE", f"/v1/workers/{segment(self.worker_id)}", timeout=DEREGISTER_BUDGET)
                log.info("deregistered")
                return
            except Unavailable as e:
                if time.monotonic() - started > DEREGISTER_BUDGET:
                    log.warning("deregister: server unavailable (%s); giving up", e)
                    return
                time.sleep(backoff.next())
            except SundialError as e:
                # The server marks silent workers dead on its own; nothing is lost.
                log.warning("deregister failed: %s", e)
                return

    # Claiming

    def _claim_loop(self) -> None:
        # Claims use a connection of their own (kept alive between claims), which stop() can
        # cut to end a long poll at once.
        conn = self._http.connection(self.claim_wait + CLAIM_SLACK)
        try:
            self._claim_with(conn)
        finally:
            conn.close()

    def _claim_with(self, conn: Any) -> None:
        backoff, idle = _Backoff(), _Backoff()
        wait = format_duration(self.claim_wait)
        outage = False
        while not self._stopping.is_set():
            with self._lock:
                while self._free <= 0 and not self._stopping.is_set():
                    self._lock.wait()
                want = self._free
            if self._stopping.is_set():
                return
            worker_id = self.worker_id
            assert worker_id is not None
            self._claim_conn = conn
            sent = time.monotonic()
            try:
                if self._stopping.is_set():
                    return
                answer = self._http.request(
                    "POST", f"/v1/workers/{segment(worker_id)}/claim", {"max": want, "wait": wait},
                    timeout=self.claim_wait + CLAIM_SLACK, conn=conn,
                )
            except Unavailable as e:
                if self._stopping.is_set():
                    return
                if not outage:
                    log.warning("claim: server unavailable (%s); retrying with backoff", e)
                    outage = True
                self._stopping.wait(backoff.next())
                continue
            except SundialError as e:
                if e.status == 404:
                    # The server forgot this worker: what it holds is not ours any more.
                    log.warning("claim: worker unknown to the server; registering again")
                    with self._lock:
                        for r in self._held.values():
                            self._stop(r, LOST)
                    self._register()
                else:
                    log.error("claim refused: %s", e)
                    self._stopping.wait(backoff.next())
                continue
            finally:
                self._claim_conn = None
            if outage:
                log.info("server reachable again")
                outage = False
            backoff.reset()
            runs = answer.get("runs") or []
            if not runs:
                # A server that answers empty claims at once is not hammered.
                if time.monotonic() - sent < self.claim_wait / 2:
                    self._stopping.wait(idle.next())
                else:
                    idle.reset()
                continue
            idle.reset()
            # The server claimed no earlier than the send time plus how long it held the poll.
            deadline = sent + (answer.get("waited_ms") or 0) / 1000 + self.lease - self.margin
            for claimed in runs:
                self._accept(claimed, worker_id, deadline)
            # A long poll leaves fresh runs little local lease: renew them now.
            if deadline - time.monotonic() < 2 * self.heartbeat_every:
                self._heartbeat_now.set()

    def _accept(self, claimed: dict[str, Any], worker_id: str, deadline: float) -> None:
        r = _Run(claimed, worker_id, deadline)
        with self._lock:
            previous = self._held.get(r.id)
            if previous is not None:
                self._stop(previous, LOST)  # claimed again at a newer attempt
            self._held[r.id] = r
            self._free -= 1
            if min(r.deadline, r.timeout_at or r.deadline) < self._monitor_at:
                self._monitor.notify()
        log.debug("run %s attempt %s: claimed (%s)", r.id, r.attempt, r.ctx.handler)
        threading.Thread(target=self._execute, args=(r,), name=f"sundial-run-{r.id}", daemon=True).start()

    # Executing

    def _execute(self, r: _Run) -> None:
        handler = self._handlers.get(r.ctx.handler)
        if handler is None:
            self._settle(r, ("failed", None, f"no handler {r.ctx.handler!r} on this worker"))
            return
        if r.timeout_error:
            self._settle(r, ("failed", None, r.timeout_error))
            return
        try:
            fn: Callable[[RunContext], Any]
            if inspect.isclass(handler):
                instance: Any = handler()  # a fresh instance per run
                fn = instance.run
            elif inspect.isroutine(handler) or not callable(getattr(handler, "run", None)):
                fn = handler
            else:
                fn = handler.run
            value = fn(r.ctx)
            if inspect.isawaitable(value):
                fut = asyncio.run_coroutine_threadsafe(_await(value), self._event_loop())
                with self._lock:
                    r.future = fut
                    if r.stop is not None:
                        fut.cancel()
                value = fut.result()
            outcome: tuple[str, Any, str | None] = ("succeeded", value, None)
        except HandlerError as e:
            outcome = ("failed", e.output, e.message)
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            outcome = ("failed", None, "handler cancelled")
        except BaseException as e:  # noqa: BLE001 - any handler failure fails the attempt
            outcome = ("failed", None, f"{type(e).__name__}: {e}")
        self._settle(r, outcome)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=_serve_loop, args=(loop,), name="sundial-asyncio", daemon=True).start()
                self._loop = loop
            return self._loop

    def _stop(self, r: _Run, reason: str) -> None:
        """Tell a run's handler to stop (lock held). `lost`/`fenced` override other reasons: a
        run that is not ours must not be completed, whatever else was asked."""
        if r.stop is not None and (r.stop in _DROPPED or reason not in _DROPPED):
            return
        if reason in _DROPPED:
            log.warning("run %s attempt %s: %s; stopping it without completing", r.id, r.attempt,
                        "lease could not be renewed in time" if reason == FENCED else "no longer held by this worker")
        else:
            log.info("run %s attempt %s: stopping (%s)", r.id, r.attempt, reason)
        r.stop, r.stop_at = reason, time.monotonic()
        r.ctx._reason.append(reason)
        r.ctx.cancelled.set()
        if r.future is not None:
            r.future.cancel()
        self._monitor.notify()  # its grace period starts now

    def _settle(self, r: _Run, outcome: tuple[str, Any, str | None]) -> None:
        """The run's one ending: report it (or drop it when it is not ours), then free its slot."""
        with self._lock:
            if r.settled:
                return  # already reported (the handler returned after its grace)
            r.settled = True
            if r.stop is None and time.monotonic() >= r.deadline:
                self._stop(r, FENCED)
            stop = r.stop
        state, output, error = outcome
        if stop == CANCELLED:
            state, error = "cancelled", "cancelled"
        elif stop == TIMED_OUT:
            state, error = "timed_out", f"timed out after {format_duration(r.ctx.timeout or 0)}"
        elif stop == SHUTDOWN:
            state, error = "failed", "worker shut down before the run finished"
        if stop not in _DROPPED:
            self._complete(r, state, output, error)
        with self._lock:
            if self._held.get(r.id) is r:
                del self._held[r.id]
            self._free += 1
            self._lock.notify_all()

    def _complete(self, r: _Run, state: str, output: Any, error: str | None) -> None:
        body = {"worker_id": r.worker_id, "attempt": r.attempt, "state": state, "output": output, "error": error}
        try:
            json.dumps(body)
        except (TypeError, ValueError) as e:
            body.update(state="failed", output=None, error=f"output is not JSON: {e}")
        backoff = _Backoff()
        while True:
            with self._lock:
                lost, left = r.stop in _DROPPED, r.deadline - time.monotonic()
            if lost or left <= 0:
                log.warning("run %s attempt %s: lease ran out before the complete was accepted; result dropped",
                            r.id, r.attempt)
                return
            try:
                self._http.request("POST", f"/v1/runs/{segment(r.id)}/complete", body, timeout=left)
                log.debug("run %s attempt %s: completed %s", r.id, r.attempt, body["state"])
                return
            except Unavailable:
                time.sleep(min(backoff.next(), max(left, 0.0)))
            except SundialError as e:
                if e.code == "stale_attempt":
                    log.warning("run %s attempt %s: complete rejected as stale (%s); dropped", r.id, r.attempt, e.message)
                else:
                    log.error("run %s attempt %s: complete refused: %s", r.id, r.attempt, e)
                return

    # Leases

    def _heartbeat_loop(self) -> None:
        backoff = _Backoff()
        delay = self.heartbeat_every
        failing = False
        while not self._done.is_set():
            self._heartbeat_now.wait(delay)
            self._heartbeat_now.clear()
            if self._done.is_set():
                return
            with self._lock:
                listed = {r.id: r for r in self._held.values()}
            worker_id = self.worker_id
            sent = time.monotonic()
            try:
                answer = self._http.request(
                    "POST", f"/v1/workers/{segment(worker_id or '')}/heartbeat",
                    {"runs": [{"run_id": r.id, "attempt": r.attempt} for r in listed.values()]},
                    timeout=self.heartbeat_every,
                )
            except SundialError as e:
                if e.status == 404:
                    # The server forgot this worker and recovered its runs: complete none.
                    log.warning("heartbeat: worker unknown to the server; dropping held runs")
                    with self._lock:
                        for r in listed.values():
                            self._stop(r, LOST)
                    delay = self.heartbeat_every
                else:
                    if not failing:  # once per outage; the claim loop reports it too
                        log.warning("heartbeat failed (%s); %d runs held; retrying", e, len(listed))
                    failing = True
                    delay = min(backoff.next(), self.heartbeat_every)
                continue
            if failing:
                log.info("heartbeats renewed again")
            failing = False
            backoff.reset()
            delay = self.heartbeat_every
            deadline = sent + self.lease - self.margin
            lost, cancel = set(answer.get("lost") or []), set(answer.get("cancel") or [])
            with self._lock:
                for run_id, r in listed.items():
                    if self._held.get(run_id) is not r:
                        continue  # finished, or claimed again at a newer attempt meanwhile
                    if run_id in lost:
                        self._stop(r, LOST)
                    else:
                        if run_id in cancel:
                            self._stop(r, CANCELLED)
                        r.deadline = max(r.deadline, deadline)

    def _monitor_loop(self) -> None:
        """Stops runs whose deadline or timeout passed, and settles runs whose handler did not
        return within its grace after being stopped."""
        with self._lock:
            while not self._done.is_set():
                now = time.monotonic()
                wake = now + 1.0
                for r in list(self._held.values()):
                    if r.settled:
                        continue
                    if r.stop is None:
                        if now >= r.deadline:
                            self._stop(r, FENCED)
                        elif r.timeout_at is not None and now >= r.timeout_at:
                            self._stop(r, TIMED_OUT)
                        else:
                            wake = min(wake, r.deadline, r.timeout_at or wake)
                            continue
                    grace = self.margin / 2 if r.stop in _DROPPED else self.stop_grace
                    if now >= r.stop_at + grace:
                        if r.abandoned:
                            continue
                        r.abandoned = True
                        log.warning("run %s attempt %s: handler ignored its stop for %ss; settling without it",
                                    r.id, r.attempt, grace)
                        threading.Thread(target=self._settle, args=(r, ("failed", None, "handler did not stop")),
                                         daemon=True).start()
                    else:
                        wake = min(wake, r.stop_at + grace)
                self._monitor_at = wake
                self._monitor.wait(max(0.0, wake - time.monotonic()))

    def _drain(self) -> None:
        with self._lock:
            if self._held:
                log.info("shutting down: draining %d running runs", len(self._held))
            end = time.monotonic() + self.drain_timeout
            while self._held and time.monotonic() < end:
                self._lock.wait(end - time.monotonic())
            if not self._held:
                return
            log.warning("drain timeout passed: stopping %d runs", len(self._held))
            for r in self._held.values():
                self._stop(r, SHUTDOWN)
            end = time.monotonic() + self.stop_grace + 5.0
            while self._held and time.monotonic() < end:
                self._lock.wait(end - time.monotonic())


async def _await(value: Any) -> Any:
    return await value


def _serve_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()
