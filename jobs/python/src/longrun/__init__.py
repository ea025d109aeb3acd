"""longrun for Python (SPEC §7): `Client` for callers, `longrun.job` for job authors.

    from longrun import Client        # submit, wait, result, download, cancel, retry, ...
    from longrun import job           # inside a job: input, progress, checkpoints, SIGTERM
"""

# The package's version has this one home; the build backend reads it from here.
__version__ = "0.1.0"

from . import job
from .client import ApiError, Client, RetryPolicy
from .models import (
    TERMINAL_STATUSES,
    Artifact,
    Progress,
    Queue,
    Request,
    RequestError,
    Result,
    Upload,
)

__all__ = [
    "TERMINAL_STATUSES",
    "ApiError",
    "Artifact",
    "Client",
    "Progress",
    "Queue",
    "Request",
    "RequestError",
    "Result",
    "RetryPolicy",
    "Upload",
    "job",
]
