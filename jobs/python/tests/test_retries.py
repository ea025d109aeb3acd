"""Which calls the client retries, and how long it waits: on idempotent calls only; and
what it refuses of a server's answer.

The error paths (503 answers, dropped connections) come from a small stand-in HTTP server
that answers as scripted, since a real longrun server does not fail on demand; the 429
path runs against the real server, whose `tight` queue refuses a third request.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from support import Server, wait_until

import longrun.client
from longrun import ApiError, Client, RetryPolicy

REQUEST = {
    "id": "req_01JD3AAAAAAAAAAAAAAAAAAAAA",
    "queue": "q",
    "status": "QUEUED",
    "priority": 0,
    "input": None,
    "metadata": {},
    "createdAt": "2026-11-26T10:00:00.000Z",
    "startedAt": None,
    "finishedAt": None,
    "attempt": 0,
    "maxAttempts": 3,
    "cancelRequested": False,
    "position": 0,
    "progress": None,
    "error": None,
    "someFieldFromTheFuture": {"a": 1},
}


class Scripted:
    """A stand-in server answering each call with the next scripted action.

    Actions: an HTTP status (with `Retry-After: 2` on 429/503, the Request on 2xx) or
    "drop" (close the connection without answering). `hits` records (method, path, key).
    """

    def __init__(self, script: List[object], body: Optional[Dict[str, Any]] = None) -> None:
        self.script = list(script)
        self.body = body if body is not None else REQUEST
        self.hits: List[Tuple[str, str, str]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                key = self.headers.get("Idempotency-Key") or ""
                scripted.hits.append((self.command, self.path, key))
                action = scripted.script.pop(0) if scripted.script else 200
                if action == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                assert isinstance(action, int)
                body = json.dumps(scripted.body if action < 400 else {"code": "x", "detail": "busy"})
                self.send_response(action)
                if action in (429, 503):
                    self.send_header("Retry-After", "2")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            do_GET = answer
            do_POST = answer

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture()
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[List[float]]:
    """The client's pauses, recorded instead of slept."""
    recorded: List[float] = []
    monkeypatch.setattr(longrun.client.time, "sleep", recorded.append)
    yield recorded


@contextmanager
def scripted(
    script: List[object], body: Optional[Dict[str, Any]] = None
) -> Iterator[Tuple[Scripted, Client]]:
    s = Scripted(script, body)
    try:
        yield s, Client(s.url, "tok", retry=RetryPolicy(attempts=3, delay=0.5, max_delay=4))
    finally:
        s.close()


def test_a_get_is_retried_after_503_honouring_retry_after(sleeps: List[float]) -> None:
    with scripted([503, 200]) as (s, client):
        request = client.get(REQUEST["id"])
        assert request.id == REQUEST["id"]
        # A field this client does not know is kept, not refused.
        assert request.extra == {"someFieldFromTheFuture": {"a": 1}}
        assert len(s.hits) == 2
        assert sleeps == [2.0]


def test_a_dropped_connection_is_retried_with_backoff_on_a_get(sleeps: List[float]) -> None:
    with scripted(["drop", "drop", 200]) as (s, client):
        assert client.get(REQUEST["id"]).status == "QUEUED"
        assert len(s.hits) == 3
        assert len(sleeps) == 2
        assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[1] <= 1.0  # jittered, doubling


def test_retries_stop_after_the_policy_s_attempts(sleeps: List[float]) -> None:
    with scripted([503, 503, 503, 503]) as (s, client):
        with pytest.raises(ApiError) as e:
            client.get(REQUEST["id"])
        assert (e.value.status, e.value.retry_after) == (503, 2.0)
        assert len(s.hits) == 3


def test_a_submit_without_an_idempotency_key_is_sent_once(sleeps: List[float]) -> None:
    with scripted([503, 200]) as (s, client):
        with pytest.raises(ApiError) as e:
            client.submit("q", {})
        assert e.value.status == 503
        assert len(s.hits) == 1 and sleeps == []
    with scripted(["drop", 200]) as (s, client):
        with pytest.raises(OSError):
            client.submit("q", {})
        assert len(s.hits) == 1


def test_a_submit_with_an_idempotency_key_is_retried_with_the_same_key(
    sleeps: List[float],
) -> None:
    with scripted([503, "drop", 202]) as (s, client):
        assert client.submit("q", {}, idempotency_key="k-1").id == REQUEST["id"]
        assert [h[2] for h in s.hits] == ["k-1", "k-1", "k-1"]
        assert sleeps[0] == 2.0 and len(sleeps) == 2


def test_a_retry_is_repeated_only_with_a_key_and_a_cancel_always(sleeps: List[float]) -> None:
    with scripted([503]) as (s, client):
        with pytest.raises(ApiError):
            client.retry(REQUEST["id"])
        assert len(s.hits) == 1
    with scripted([503, 202]) as (s, client):
        client.retry(REQUEST["id"], idempotency_key="r-1")
        assert len(s.hits) == 2
    with scripted(["drop", 202]) as (s, client):
        client.cancel(REQUEST["id"])
        assert [h[:2] for h in s.hits] == [("POST", f"/v1/requests/{REQUEST['id']}/cancel")] * 2


def test_queue_full_on_the_real_server_is_waited_out_by_a_keyed_submit(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = server.client()
    running = client.submit("tight", {"steps": 500, "sleepMs": 100})
    wait_until("RUNNING", lambda: client.get(running.id).status == "RUNNING")
    queued = client.submit("tight", {"steps": 1, "sleepMs": 10})
    with pytest.raises(ApiError) as e:
        client.submit("tight", {"steps": 1})
    assert (e.value.status, e.value.code) == (429, "queue_full")
    assert e.value.retry_after is not None and e.value.retry_after > 0

    # A keyed submit waits as Retry-After says; the queue has room again after that pause.
    waited: List[float] = []

    def pause(seconds: float) -> None:
        waited.append(seconds)
        client.cancel(queued.id)

    monkeypatch.setattr(longrun.client.time, "sleep", pause)
    third = client.submit("tight", {"steps": 1}, idempotency_key=f"tight-{queued.id}")
    assert third.status == "QUEUED"
    assert waited == [e.value.retry_after]
    monkeypatch.undo()
    for id in (running.id, third.id):
        client.cancel(id)


def test_download_refuses_an_artifact_name_that_leads_out_of_the_folder(tmp_path: Path) -> None:
    artifact = {"name": "../escaped.bin", "size": 3, "url": "/elsewhere"}
    result = {"id": REQUEST["id"], "output": None, "artifacts": [artifact]}
    with scripted([200], result) as (s, client):
        with pytest.raises(ValueError, match="leads out of"):
            client.download(REQUEST["id"], tmp_path / "out")
        assert [h[1] for h in s.hits] == [f"/v1/requests/{REQUEST['id']}/result"]
    assert not (tmp_path / "escaped.bin").exists()
