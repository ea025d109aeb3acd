"""What the API answers, as plain dataclasses (SPEC §2).

Each one is built from the JSON by `from_json`, which reads the members it knows and keeps
every other member in `extra`: a newer server may add fields without breaking an older
client. Times are timezone-aware `datetime`s in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import AbstractSet, Any, Dict, List, Mapping, Optional, cast

#: Statuses after which a request never changes again.
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"})


def _time(value: Any) -> Optional[datetime]:
    if not isinstance(value, str):
        return None
    # fromisoformat reads a trailing "Z" only from Python 3.11 on.
    return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)


def json_object(value: Any) -> Optional[Mapping[str, Any]]:
    """`value` when it is a JSON object, else None."""
    return cast(Mapping[str, Any], value) if isinstance(value, dict) else None


def _extra(body: Mapping[str, Any], known: AbstractSet[str]) -> Dict[str, Any]:
    return {k: v for k, v in body.items() if k not in known}


@dataclass(frozen=True)
class Progress:
    """The job's last progress report."""

    current: float
    total: Optional[float]
    message: Optional[str]
    updated_at: Optional[datetime]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Progress:
        return cls(
            current=body.get("current", 0),
            total=body.get("total"),
            message=body.get("message"),
            updated_at=_time(body.get("updatedAt")),
        )


@dataclass(frozen=True)
class RequestError:
    """Why a request ended FAILED, CANCELLED or EXPIRED (`job_failed`, `timeout`, ...)."""

    code: str
    message: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> RequestError:
        return cls(code=str(body.get("code", "")), message=str(body.get("message", "")))


_REQUEST_FIELDS = frozenset(
    {
        "id",
        "queue",
        "status",
        "priority",
        "input",
        "metadata",
        "createdAt",
        "startedAt",
        "finishedAt",
        "attempt",
        "maxAttempts",
        "cancelRequested",
        "position",
        "progress",
        "error",
        "waitReason",
        "waitDetail",
        "estimatedStartAt",
        "files",
        "retryOf",
    }
)


@dataclass(frozen=True)
class Request:
    """A request as `GET /v1/requests/{id}` shows it (list items have no `input`: None)."""

    id: str
    queue: str
    status: str
    priority: int = 0
    input: Any = None
    metadata: Dict[str, str] = field(default_factory=dict[str, str])
    created_at: Optional[datetime] = None
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    attempt: int = 0
    max_attempts: int = 1
    cancel_requested: bool = False
    position: Optional[int] = None
    progress: Optional[Progress] = None
    error: Optional[RequestError] = None
    wait_reason: Optional[str] = None
    wait_detail: Optional[str] = None
    estimated_start_at: Optional[datetime] = None
    #: Uploaded input files by name: their sizes in bytes.
    files: Dict[str, int] = field(default_factory=dict[str, int])
    #: The id of the request this one retries.
    retry_of: Optional[str] = None
    #: Members of the answer this client does not know yet.
    extra: Dict[str, Any] = field(default_factory=dict[str, Any], compare=False)
    #: True when a submit or retry was answered as an idempotent replay (HTTP 200 with
    #: `Idempotent-Replayed: true`): the request existed already and no job was added.
    replayed: bool = field(default=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        """SUCCEEDED, FAILED, CANCELLED or EXPIRED: the request will not change again."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, replayed: bool = False) -> Request:
        progress = json_object(body.get("progress"))
        error = json_object(body.get("error"))
        files = json_object(body.get("files")) or {}
        return cls(
            id=str(body["id"]),
            queue=str(body.get("queue", "")),
            status=str(body.get("status", "")),
            priority=int(body.get("priority", 0)),
            input=body.get("input"),
            metadata=dict(body.get("metadata") or {}),
            created_at=_time(body.get("createdAt")),
            started_at=_time(body.get("startedAt")),
            finished_at=_time(body.get("finishedAt")),
            attempt=int(body.get("attempt", 0)),
            max_attempts=int(body.get("maxAttempts", 1)),
            cancel_requested=bool(body.get("cancelRequested", False)),
            position=body.get("position"),
            progress=Progress.from_json(progress) if progress is not None else None,
            error=RequestError.from_json(error) if error is not None else None,
            wait_reason=body.get("waitReason"),
            wait_detail=body.get("waitDetail"),
            estimated_start_at=_time(body.get("estimatedStartAt")),
            files={name: int((json_object(f) or {}).get("size", 0)) for name, f in files.items()},
            retry_of=body.get("retryOf"),
            extra=_extra(body, _REQUEST_FIELDS),
            replayed=replayed,
        )


@dataclass(frozen=True)
class Artifact:
    """A file the job left in its output folder; `url` is a plain GET for a while."""

    name: str
    size: int
    url: str


_RESULT_FIELDS = frozenset({"id", "output", "artifacts"})


@dataclass(frozen=True)
class Result:
    """A SUCCEEDED request's output (its `result.json`) and artifacts."""

    id: str
    output: Any
    artifacts: List[Artifact] = field(default_factory=list[Artifact])
    extra: Dict[str, Any] = field(default_factory=dict[str, Any], compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Result:
        return cls(
            id=str(body["id"]),
            output=body.get("output"),
            artifacts=[
                Artifact(name=str(a["name"]), size=int(a["size"]), url=str(a["url"]))
                for a in map(json_object, body.get("artifacts") or [])
                if a is not None
            ],
            extra=_extra(body, _RESULT_FIELDS),
        )


_UPLOAD_FIELDS = frozenset(
    {
        "id",
        "filename",
        "size",
        "status",
        "createdAt",
        "expiresAt",
    }
)


@dataclass(frozen=True)
class Upload:
    """An uploaded input file: PENDING until its bytes arrived, then READY."""

    id: str
    filename: str
    size: int
    status: str
    created_at: Optional[datetime] = None
    expires_at: Optional[datetime] = None
    extra: Dict[str, Any] = field(default_factory=dict[str, Any], compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Upload:
        return cls(
            id=str(body["id"]),
            filename=str(body.get("filename", "")),
            size=int(body.get("size", 0)),
            status=str(body.get("status", "")),
            created_at=_time(body.get("createdAt")),
            expires_at=_time(body.get("expiresAt")),
            extra=_extra(body, _UPLOAD_FIELDS),
        )


_QUEUE_FIELDS = frozenset(
    {
        "name",
        "maxQueued",
        "maxRunning",
        "queued",
        "running",
    }
)


@dataclass(frozen=True)
class Queue:
    """A queue's limits and current counts (`running` counts STARTING and RUNNING)."""

    name: str
    max_queued: int
    max_running: int
    queued: int
    running: int
    extra: Dict[str, Any] = field(default_factory=dict[str, Any], compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Queue:
        return cls(
            name=str(body["name"]),
            max_queued=int(body.get("maxQueued", 0)),
            max_running=int(body.get("maxRunning", 0)),
            queued=int(body.get("queued", 0)),
            running=int(body.get("running", 0)),
            extra=_extra(body, _QUEUE_FIELDS),
        )
