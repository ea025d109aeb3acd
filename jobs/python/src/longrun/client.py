"""`longrun.Client`: every route of the longrun HTTP API (SPEC §2, §7 "Python").

    from longrun import Client

    client = Client()                       # LONGRUN_URL / LONGRUN_TOKEN, else localhost / dev
    request = client.submit("finetune", {"epochs": 3}, idempotency_key="run-1")
    done = client.wait(request.id, on_update=lambda r: print(r.status, r.progress))
    print(client.result(done.id).output)
    client.download(done.id, "out/")

Calls that are safe to repeat (every GET, cancel, the signed upload PUT, and a submit or
retry that carries an idempotency key) are retried on connection errors and on 429/503
answers, honouring `Retry-After`, with exponential backoff otherwise. Everything else is
sent once: a submit without a key might otherwise run twice.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import (
    IO,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
)

from . import __version__
from .models import Queue, Request, RequestError, Result, Upload, json_object

#: A local file to upload, or the id (`upl_…`) of an upload made before.
FileRef = Union[str, "os.PathLike[str]"]

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TOKEN = "dev"

#: The problem code an answer implies when its body is not problem+json (a proxy's page).
_CODE_OF_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    429: "rate_limited",
    500: "internal",
}
_RETRY_STATUSES = (429, 503)
_CHUNK = 1 << 20


class ApiError(Exception):
    """The API answered with a problem (RFC 9457): `status`, stable `code`, `detail`.

    `request_status` is the request's status on `not_ready`, `no_result` and `conflict`;
    `error` why it ended on `no_result`; `retry_after` the seconds `Retry-After` asked for.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        problem: Optional[Mapping[str, Any]] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.problem: Dict[str, Any] = dict(problem or {})
        self.retry_after = retry_after
        rs = self.problem.get("requestStatus")
        self.request_status: Optional[str] = rs if isinstance(rs, str) else None
        err = json_object(self.problem.get("error"))
        self.error = RequestError.from_json(err) if err is not None else None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a repeatable call is retried."""

    #: Tries in all, the first included.
    attempts: int = 5
    #: First backoff in seconds; doubled each try, with jitter, up to `max_delay`.
    delay: float = 0.5
    max_delay: float = 30.0


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None


#: A request body: bytes, or a function opening a fresh stream for each try.
_Body = Union[None, bytes, Callable[[], IO[bytes]]]


class Client:
    """A client of one longrun deployment.

    `url` and `token` default to `LONGRUN_URL` and `LONGRUN_TOKEN`, else to the embedded
    server's `http://127.0.0.1:8080` and its development token `dev`. `timeout` bounds each
    socket operation, `poll_interval` the pause between polls of `wait` and `logs`.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy = RetryPolicy(),
        poll_interval: float = 1.0,
    ) -> None:
        self.url = (url or os.environ.get("LONGRUN_URL") or DEFAULT_URL).rstrip("/")
        self.token = token or os.environ.get("LONGRUN_TOKEN") or DEFAULT_TOKEN
        self.timeout = timeout
        self.retry_policy = retry
        self.poll_interval = poll_interval
        self._opener = urllib.request.build_opener()
        # Local files uploaded by this client: (path, size, mtime) -> (upload id, expiry).
        self._uploaded: Dict[Tuple[str, int, int], Tuple[str, float]] = {}

    # ---- requests ----------------------------------------------------------------------

    def submit(
        self,
        queue: str,
        input: Any,
        *,
        files: Optional[Mapping[str, FileRef]] = None,
        priority: Optional[int] = None,
        idempotency_key: Optional[str] = None,
        timeout_seconds: Optional[int] = None,
        queue_ttl_seconds: Optional[int] = None,
        webhook: Optional[Mapping[str, Any]] = None,
        metadata: Optional[Mapping[str, str]] = None,
    ) -> Request:
        """Submits a request to `queue`; answers at once with it (QUEUED, usually).

        `files` maps names (as the job sees them in `LONGRUN_INPUT_DIR`) to upload ids or
        local paths; a path is uploaded first. With an `idempotency_key`, the same key and
        body give back the same request (`replayed` is then True), and the call is retried
        on connection errors and 429/503. A re-run that should replay must send the same
        body: pass upload ids rather than paths there, since each upload has a new id.
        """
        body: Dict[str, Any] = {"input": input}
        if files:
            body["files"] = {name: self._upload_ref(ref) for name, ref in files.items()}
        optional = {
            "priority": priority,
            "timeoutSeconds": timeout_seconds,
            "queueTtlSeconds": queue_ttl_seconds,
            "webhook": dict(webhook) if webhook is not None else None,
            "metadata": dict(metadata) if metadata is not None else None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        res = self._call(
            "POST",
            f"/v1/queues/{_seg(queue)}/requests",
            body,
            idempotency_key=idempotency_key,
            repeatable=idempotency_key is not None,
        )
        return _request_of(res)

    def get(self, id: str) -> Request:
        """The request's current status, progress, attempt and position."""
        return Request.from_json(self._call("GET", f"/v1/requests/{_seg(id)}").json())

    def wait(
        self,
        id: str,
        timeout: Optional[float] = None,
        on_update: Optional[Callable[[Request], None]] = None,
    ) -> Request:
        """Polls the request until it is SUCCEEDED, FAILED, CANCELLED or EXPIRED; returns it.

        `on_update` is called with the first state seen and each time it changes (status,
        progress, attempt, position ...). After `timeout` seconds, `TimeoutError`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last: Optional[Request] = None
        while True:
            request = self.get(id)
            if on_update is not None and request != last:
                on_update(request)
            last = request
            if request.is_terminal:
                return request
            pause = self.poll_interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{id} is still {request.status} after {timeout} s")
                pause = min(pause, left)
            time.sleep(pause)

    def result(self, id: str) -> Result:
        """A SUCCEEDED request's output and artifacts.

        Before the end: ApiError `not_ready`; FAILED, CANCELLED or EXPIRED: `no_result`.
        """
        return Result.from_json(self._call("GET", f"/v1/requests/{_seg(id)}/result").json())

    def download(self, id: str, directory: Union[str, "os.PathLike[str]"]) -> Dict[str, Path]:
        """Saves every artifact of a SUCCEEDED request under `directory`; name -> path.

        Each file is streamed to a temp file, checked against the artifact's size and then
        renamed into place, so a file that is there is whole.
        """
        root = Path(directory).resolve()
        saved: Dict[str, Path] = {}
        for artifact in self.result(id).artifacts:
            target = (root / artifact.name).resolve()
            if root not in target.parents:
                raise ValueError(f"artifact name {artifact.name!r} leads out of {root}")
            target.parent.mkdir(parents=True, exist_ok=True)
            url = urllib.parse.urljoin(self.url + "/", artifact.url)
            self._fetch_to(url, target, artifact.size)
            saved[artifact.name] = target
        return saved

    def cancel(self, id: str) -> Request:
        """Cancels: a QUEUED request at once, a running one after its job stopped (SIGTERM)."""
        return _request_of(self._call("POST", f"/v1/requests/{_seg(id)}/cancel", repeatable=True))

    def retry(
        self, id: str, from_checkpoint: bool = True, *, idempotency_key: Optional[str] = None
    ) -> Request:
        """Submits a FAILED, CANCELLED or EXPIRED request again as a new request.

        With `from_checkpoint`, its first attempt starts from the old one's last checkpoint.
        """
        res = self._call(
            "POST",
            f"/v1/requests/{_seg(id)}/retry",
            {"fromCheckpoint": from_checkpoint},
            idempotency_key=idempotency_key,
            repeatable=idempotency_key is not None,
        )
        return _request_of(res)

    def list(
        self,
        queue: str,
        status: Union[None, str, Iterable[str]] = None,
        *,
        limit: Optional[int] = None,
    ) -> Iterator[Request]:
        """Every request of yours in `queue`, newest first, page after page.

        `status` is one status or several; `limit` the page size (1–1000). List items have
        no `input` (`get` one for it).
        """
        cursor: Optional[str] = None
        while True:
            items, cursor = self.list_page(queue, status, limit=limit, cursor=cursor)
            yield from items
            if cursor is None:
                return

    def list_page(
        self,
        queue: str,
        status: Union[None, str, Iterable[str]] = None,
        *,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> Tuple[List[Request], Optional[str]]:
        """One page of `list`: its items and the cursor of the next page (None at the end)."""
        query: Dict[str, str] = {}
        if status is not None:
            query["status"] = status if isinstance(status, str) else ",".join(status)
        if limit is not None:
            query["limit"] = str(limit)
        if cursor:
            query["cursor"] = cursor
        page = self._call("GET", f"/v1/queues/{_seg(queue)}/requests{_qs(query)}").json()
        return [Request.from_json(item) for item in page["items"]], page.get("nextCursor")

    def logs(self, id: str, follow: bool = False) -> Iterator[str]:
        """The job's stdout and stderr lines, every attempt, oldest first.

        With `follow`, keeps reading as the job writes until the request has ended and its
        last lines were read.
        """
        cursor: Optional[str] = None
        ended = False
        while True:
            lines, cursor = self.logs_page(id, cursor)
            yield from lines
            if lines:
                continue  # drain what is there before looking at the status
            if not follow or ended:
                return
            # One more page after the end catches lines written between the last page and it.
            if self.get(id).is_terminal:
                ended = True
            else:
                time.sleep(self.poll_interval)

    def logs_page(
        self, id: str, cursor: Optional[str] = None, *, limit: Optional[int] = None
    ) -> Tuple[List[str], str]:
        """One page of `logs`: its lines and the cursor that continues after them."""
        query = {"cursor": cursor or "", "limit": "" if limit is None else str(limit)}
        page = self._call("GET", f"/v1/requests/{_seg(id)}/logs{_qs(query)}").json()
        return [str(line) for line in page["lines"]], str(page["nextCursor"])

    # ---- uploads -----------------------------------------------------------------------

    def upload(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        filename: Optional[str] = None,
        checksum: bool = False,
    ) -> str:
        """Uploads a local file (streamed, never read whole into memory); its upload id.

        The id names the file in `submit(files=...)` for 24 hours. With `checksum`, the
        file's SHA-256 is computed first (one more read) and the server refuses other bytes.
        """
        size = os.stat(path).st_size
        name: str = filename or os.path.basename(os.fspath(path))
        body: Dict[str, Any] = {"filename": name, "size": size}
        if checksum:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(_CHUNK), b""):
                    digest.update(chunk)
            body["sha256"] = digest.hexdigest()
        res = self._call("POST", "/v1/uploads", body)
        ticket = res.json()
        signed = json_object(ticket.get("headers")) or {}
        headers = {str(k): str(v) for k, v in signed.items()}
        if not any(k.lower() == "content-length" for k in headers):
            headers["Content-Length"] = str(size)
        url = urllib.parse.urljoin(self.url + "/", str(ticket["url"]))
        put = self._send(
            str(ticket.get("method", "PUT")),
            url,
            lambda: open(path, "rb"),
            headers,
            repeatable=True,
        )
        if put.status >= 300:
            raise _problem(put)
        return str(ticket["id"])

    def get_upload(self, id: str) -> Upload:
        """An upload's size and status (PENDING until its bytes arrived, then READY)."""
        return Upload.from_json(self._call("GET", f"/v1/uploads/{_seg(id)}").json())

    # ---- queues and the rest -----------------------------------------------------------

    def queues(self) -> List[Queue]:
        """Every configured queue with its limits and counts."""
        return [Queue.from_json(q) for q in self._call("GET", "/v1/queues").json()]

    def queue(self, name: str) -> Queue:
        """One queue's limits and counts."""
        return Queue.from_json(self._call("GET", f"/v1/queues/{_seg(name)}").json())

    def health(self) -> bool:
        """True when the API answers `{"status": "ok"}`."""
        return self._call("GET", "/v1/health", auth=False).json().get("status") == "ok"

    def openapi(self) -> Dict[str, Any]:
        """The OpenAPI 3.1 document of the API."""
        return dict(self._call("GET", "/v1/openapi.json", auth=False).json())

    def metrics(self) -> str:
        """The Prometheus text exposition of `GET /v1/metrics`."""
        return self._call("GET", "/v1/metrics").body.decode("utf-8")

    def webhook_secret(self) -> str:
        """Your tenant's webhook signing secret (`whsec_…`)."""
        return str(self._call("GET", "/v1/webhook-secret").json()["secret"])

    def rotate_webhook_secret(self) -> str:
        """Makes a new webhook secret; returns it. The old one also signs for 24 hours."""
        return str(self._call("POST", "/v1/webhook-secret/rotate").json()["secret"])

    # ---- transport ---------------------------------------------------------------------

    def _upload_ref(self, ref: FileRef) -> str:
        if isinstance(ref, str) and ref.startswith("upl_"):
            return ref
        st = os.stat(ref)
        key = (os.path.realpath(ref), st.st_size, st.st_mtime_ns)
        known = self._uploaded.get(key)
        if known is not None and known[1] > time.time() + 3600:
            return known[0]
        upload_id = self.upload(ref)
        self._uploaded[key] = (upload_id, time.time() + 24 * 3600)
        return upload_id

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotency_key: Optional[str] = None,
        repeatable: Optional[bool] = None,
        auth: bool = True,
    ) -> _Response:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        data: Optional[bytes] = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        res = self._send(
            method,
            self.url + path,
            data,
            headers,
            repeatable=method == "GET" if repeatable is None else repeatable,
        )
        if res.status >= 400:
            raise _problem(res)
        return res

    def _send(
        self, method: str, url: str, body: _Body, headers: Mapping[str, str], *, repeatable: bool
    ) -> _Response:
        """One HTTP exchange, tried again on connection errors and 429/503 if `repeatable`."""
        policy = self.retry_policy
        tries = 0
        while True:
            tries += 1
            stream = body() if callable(body) else None
            try:
                res = self._exchange(method, url, stream if stream is not None else body, headers)
            except (OSError, http.client.HTTPException):
                if not repeatable or tries >= policy.attempts:
                    raise
                delay = _backoff(policy, tries)
            else:
                if not (repeatable and res.status in _RETRY_STATUSES and tries < policy.attempts):
                    return res
                after = _retry_after(res.headers)
                delay = _backoff(policy, tries) if after is None else after
            finally:
                if stream is not None:
                    stream.close()
            time.sleep(delay)

    def _exchange(
        self, method: str, url: str, data: Any, headers: Mapping[str, str]
    ) -> _Response:
        all_headers = {"User-Agent": f"longrun-python/{__version__}", **headers}
        req = urllib.request.Request(url, data=data, headers=all_headers, method=method)
        try:
            with self._opener.open(req, timeout=self.timeout) as res:
                return _Response(res.status, res.headers, res.read())
        except urllib.error.HTTPError as e:
            with e:
                return _Response(e.code, e.headers, e.read())

    def _fetch_to(self, url: str, target: Path, size: int) -> None:
        """Streams a signed URL (no token: the signature is the credential) to `target`."""
        tmp = target.with_name(f".{target.name}.part-{os.getpid()}")
        policy = self.retry_policy
        tries = 0
        while True:
            tries += 1
            req = urllib.request.Request(url, headers={"User-Agent": f"longrun-python/{__version__}"})
            try:
                with self._opener.open(req, timeout=self.timeout) as res, open(tmp, "wb") as out:
                    while True:
                        chunk = res.read(_CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
                got = tmp.stat().st_size
                if got != size:
                    raise http.client.IncompleteRead(b"", size - got)
                os.replace(tmp, target)
                return
            except urllib.error.HTTPError as e:
                with e:
                    res = _Response(e.code, e.headers, e.read())
                if res.status not in _RETRY_STATUSES or tries >= policy.attempts:
                    tmp.unlink(missing_ok=True)
                    raise _problem(res) from None
                after = _retry_after(res.headers)
                time.sleep(_backoff(policy, tries) if after is None else after)
            except (OSError, http.client.HTTPException):
                if tries >= policy.attempts:
                    tmp.unlink(missing_ok=True)
                    raise
                time.sleep(_backoff(policy, tries))


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _qs(query: Mapping[str, str]) -> str:
    kept = {k: v for k, v in query.items() if v != ""}
    return "?" + urllib.parse.urlencode(kept) if kept else ""


def _request_of(res: _Response) -> Request:
    replayed = (res.headers.get("Idempotent-Replayed") or "").lower() == "true"
    return Request.from_json(res.json(), replayed=replayed)


def _backoff(policy: RetryPolicy, tries: int) -> float:
    """Exponential with full jitter, so many clients retrying at once spread out."""
    return random.uniform(0, min(policy.max_delay, policy.delay * 2 ** (tries - 1)))


def _retry_after(headers: Message) -> Optional[float]:
    """`Retry-After` in seconds: delta-seconds or an HTTP date; None when absent or bad."""
    value = (headers.get("Retry-After") or "").strip()
    if re.fullmatch(r"\d+", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _problem(res: _Response) -> ApiError:
    """The ApiError of an error answer, problem+json or not."""
    body: Any = None
    try:
        body = res.json()
    except (ValueError, UnicodeDecodeError):
        pass
    problem = dict(json_object(body) or {})
    code = problem.get("code")
    detail = problem.get("detail")
    if not isinstance(detail, str):
        detail = res.body.decode("utf-8", "replace")[:500] or http.client.responses.get(
            res.status, "error"
        )
    return ApiError(
        res.status,
        code if isinstance(code, str) else _CODE_OF_STATUS.get(res.status, "internal"),
        detail,
        problem=problem,
        retry_after=_retry_after(res.headers),
    )
