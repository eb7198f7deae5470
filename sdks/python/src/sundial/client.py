"""The API client: submit jobs, read and wait for runs, operate jobs and runs."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, Iterable, Iterator, Mapping

from ._http import Transport, format_duration, segment
from .errors import SundialError
from .models import BatchItem, Job, Page, RetryPolicy, Run, Trigger, WorkerInfo

JobRef = str
"""A job id, or `namespace/name`."""


def job_spec(
    handler: str,
    payload: Any = None,
    *,
    name: str | None = None,
    namespace: str | None = None,
    priority: int | None = None,
    retry: RetryPolicy | Mapping[str, Any] | None = None,
    timeout: str | float | timedelta | None = None,
    overlap: str | None = None,
    paused: bool | None = None,
    idempotency_key: str | None = None,
    triggers: Iterable[Trigger | Mapping[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON of a job definition (`POST /v1/jobs`); `extra` passes fields the SDK does not
    name yet (e.g. `limits`)."""
    spec: dict[str, Any] = {"handler": handler}
    if payload is not None:
        spec["payload"] = payload
    if retry is not None:
        spec["retry"] = retry.to_json() if isinstance(retry, RetryPolicy) else dict(retry)
    if timeout is not None:
        spec["timeout"] = format_duration(timeout)
    if triggers is not None:
        spec["triggers"] = [t.to_json() if isinstance(t, Trigger) else dict(t) for t in triggers]
    for key, value in (
        ("name", name),
        ("namespace", namespace),
        ("priority", priority),
        ("overlap", overlap),
        ("paused", paused),
        ("idempotency_key", idempotency_key),
    ):
        if value is not None:
            spec[key] = value
    spec.update(extra)
    return spec


class Client:
    """A client of one sundial server. Thread-safe; keeps connections alive between calls.

    >>> client = Client("http://127.0.0.1:7070", token="...")
    >>> job = client.submit("send-email", {"to": "a@b.c"})
    >>> run = client.wait_for_run(client.list_runs(job_id=job.id).items[0].id)
    """

    def __init__(self, server: str = "http://127.0.0.1:7070", *, token: str | None = None, timeout: float = 30.0):
        self._http = Transport(server, token, timeout)

    @property
    def server(self) -> str:
        """The server's base URL."""
        return self._http.server

    def close(self) -> None:
        """Close idle connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None) -> Any:
        """Any API call (for routes the SDK has no method for); the parsed JSON answer."""
        return self._http.request(method, path, body, query=query)

    # Jobs

    def submit(self, handler: str, payload: Any = None, **options: Any) -> Job:
        """Create a job (`POST /v1/jobs`); options as in `job_spec`. Without triggers the job
        gets one run, due now. Resubmitting an identical definition returns the existing job."""
        return Job.from_json(self._http.request("POST", "/v1/jobs", job_spec(handler, payload, **options)))

    def submit_batch(self, jobs: Iterable[Mapping[str, Any]]) -> list[BatchItem]:
        """Create many jobs in one call (`POST /v1/jobs/batch`); each item stands alone. Build
        items with `job_spec`."""
        answer = self._http.request("POST", "/v1/jobs/batch", {"jobs": list(jobs)})
        out = []
        for item in answer["items"]:
            err = item.get("error")
            out.append(
                BatchItem(
                    status=item["status"],
                    job=Job.from_json(item["job"]) if item.get("job") else None,
                    error=SundialError(err.get("code", "error"), err.get("message", ""), item["status"]) if err else None,
                )
            )
        return out

    def get_job(self, job: JobRef) -> Job:
        """A job by id or `namespace/name`."""
        return Job.from_json(self._http.request("GET", f"/v1/jobs/{segment(job)}"))

    def list_jobs(
        self,
        *,
        namespace: str | None = None,
        handler: str | None = None,
        paused: bool | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Job]:
        """One page of jobs."""
        q = {"namespace": namespace, "handler": handler, "paused": paused, "limit": limit, "cursor": cursor}
        answer = self._http.request("GET", "/v1/jobs", query=q)
        return Page([Job.from_json(j) for j in answer["items"]], answer.get("next_cursor"))

    def update_job(self, job: JobRef, **changes: Any) -> Job:
        """Change definition fields (`PATCH`); `triggers` replaces them as a whole."""
        if "triggers" in changes:
            changes["triggers"] = [t.to_json() if isinstance(t, Trigger) else t for t in changes["triggers"]]
        if isinstance(changes.get("retry"), RetryPolicy):
            changes["retry"] = changes["retry"].to_json()
        if "timeout" in changes and changes["timeout"] is not None:
            changes["timeout"] = format_duration(changes["timeout"])
        return Job.from_json(self._http.request("PATCH", f"/v1/jobs/{segment(job)}", changes))

    def delete_job(self, job: JobRef) -> None:
        """Delete a job; its pending runs are cancelled, its runs stay queryable."""
        self._http.request("DELETE", f"/v1/jobs/{segment(job)}")

    def pause(self, job: JobRef) -> Job:
        """Pause a job: its triggers stop firing and its pending runs wait."""
        return Job.from_json(self._http.request("POST", f"/v1/jobs/{segment(job)}/pause"))

    def resume(self, job: JobRef) -> Job:
        """Resume a paused job."""
        return Job.from_json(self._http.request("POST", f"/v1/jobs/{segment(job)}/resume"))

    def run_now(self, job: JobRef) -> Run:
        """Start a run of the job now (also when paused)."""
        return Run.from_json(self._http.request("POST", f"/v1/jobs/{segment(job)}/run"))

    # Runs

    def list_runs(
        self,
        *,
        job_id: str | None = None,
        state: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Run]:
        """One page of runs, newest first by `scheduled_for`."""
        q = {"job_id": job_id, "state": state, "since": since, "until": until, "limit": limit, "cursor": cursor}
        answer = self._http.request("GET", "/v1/runs", query=q)
        return Page([Run.from_json(r) for r in answer["items"]], answer.get("next_cursor"))

    def iter_runs(self, **filters: Any) -> Iterator[Run]:
        """Every run matching the filters of `list_runs`, page after page."""
        cursor = None
        while True:
            page = self.list_runs(cursor=cursor, **filters)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def get_run(self, run_id: str) -> Run:
        """A run by id."""
        return Run.from_json(self._http.request("GET", f"/v1/runs/{segment(run_id)}"))

    def wait_for_run(self, run_id: str, *, timeout: float = 60.0, poll: float = 0.2) -> Run:
        """Poll a run until it is finished (see `Run.finished`); TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run.finished:
                return run
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} still {run.state} after {timeout}s")
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def cancel(self, run_id: str) -> Run:
        """Cancel a run: a pending one at once, a running one at its worker's next heartbeat."""
        return Run.from_json(self._http.request("POST", f"/v1/runs/{segment(run_id)}/cancel"))

    def retry(self, run_id: str) -> Run:
        """Put a failed, timed-out or cancelled run back to pending, due now (409
        `not_retryable` otherwise)."""
        return Run.from_json(self._http.request("POST", f"/v1/runs/{segment(run_id)}/retry"))

    # Workers

    def list_workers(self) -> list[WorkerInfo]:
        """The workers the server knows."""
        answer = self._http.request("GET", "/v1/workers")
        items = answer["items"] if isinstance(answer, dict) else answer
        return [WorkerInfo.from_json(w) for w in items]
