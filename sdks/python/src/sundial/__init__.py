"""sundial: a client and a worker for the sundial job scheduler's HTTP API.

    from sundial import Client, Worker

Standard library only; Python >= 3.10.
"""

from .client import Client, job_spec
from .errors import SundialError, Unavailable
from .models import BatchItem, FINISHED_STATES, Job, Page, RetryPolicy, Run, Trigger, WorkerInfo
from .worker import HandlerError, RunContext, Worker

__all__ = [
    "BatchItem",
    "Client",
    "FINISHED_STATES",
    "HandlerError",
    "Job",
    "Page",
    "RetryPolicy",
    "Run",
    "RunContext",
    "SundialError",
    "Trigger",
    "Unavailable",
    "Worker",
    "WorkerInfo",
    "job_spec",
]
__version__ = "0.1.0"
