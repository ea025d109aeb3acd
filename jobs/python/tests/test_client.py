"""longrun.Client against a real embedded server running real jobs."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import List

import pytest
from support import ALICE, BOB, Server, wait_until

from longrun import ApiError, Client, Request


def test_health_openapi_and_queues(client: Client) -> None:
    assert client.health() is True
    doc = client.openapi()
    assert doc["openapi"].startswith("3.1")
    assert "/v1/queues/{queue}/requests" in doc["paths"]
    names = {q.name for q in client.queues()}
    assert {"demo", "pages", "tight", "steps", "finetune"} <= names
    tight = client.queue("tight")
    assert (tight.max_queued, tight.max_running) == (1, 1)
    assert tight.queued >= 0 and tight.running >= 0


def test_submit_wait_result_and_download(client: Client, tmp_path: Path) -> None:
    request = client.submit(
        "demo",
        {"steps": 3, "sleepMs": 50, "artifactBytes": 5000, "output": {"x": 1}},
        priority=7,
        metadata={"team": "search"},
    )
    assert request.id.startswith("req_")
    assert (request.queue, request.priority, request.metadata) == ("demo", 7, {"team": "search"})
    assert request.replayed is False

    seen: List[Request] = []
    done = client.wait(request.id, timeout=60, on_update=seen.append)
    assert done.status == "SUCCEEDED" and done.is_terminal
    assert done.progress is not None and (done.progress.current, done.progress.total) == (3, 3)
    assert done.finished_at is not None and done.created_at is not None
    assert seen[-1] == done
    # on_update sees each change once: consecutive states differ.
    assert all(a != b for a, b in zip(seen, seen[1:]))

    result = client.result(request.id)
    assert result.output == {"steps": 3, "resumedFrom": 0, "attempt": 1, "output": {"x": 1}}
    assert [(a.name, a.size) for a in result.artifacts] == [("artifact.bin", 5000)]

    saved = client.download(request.id, tmp_path / "out")
    assert set(saved) == {"artifact.bin"}
    assert saved["artifact.bin"].read_bytes() == bytes(i % 251 for i in range(5000))
    # Only the finished file is left: the temp file it was streamed to was renamed.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["artifact.bin"]


def test_idempotent_submit_replays_and_conflicts(client: Client) -> None:
    key = f"py-{uuid.uuid4()}"
    first = client.submit("demo", {"steps": 1, "sleepMs": 10}, idempotency_key=key)
    again = client.submit("demo", {"steps": 1, "sleepMs": 10}, idempotency_key=key)
    assert again.id == first.id
    assert (first.replayed, again.replayed) == (False, True)
    with pytest.raises(ApiError) as e:
        client.submit("demo", {"steps": 2}, idempotency_key=key)
    assert (e.value.status, e.value.code) == (409, "idempotency_conflict")


def test_cancel_a_running_request(client: Client) -> None:
    request = client.submit("demo", {"steps": 200, "sleepMs": 100})
    wait_until("RUNNING", lambda: client.get(request.id).status == "RUNNING")
    cancelling = client.cancel(request.id)
    assert cancelling.cancel_requested is True
    done = client.wait(request.id, timeout=60)
    assert done.status == "CANCELLED"
    assert done.error is not None and done.error.code == "cancelled"
    # Cancelling again changes nothing and is not an error.
    assert client.cancel(request.id).status == "CANCELLED"
    with pytest.raises(ApiError) as e:
        client.result(request.id)
    assert (e.value.status, e.value.code, e.value.request_status) == (409, "no_result", "CANCELLED")
    assert e.value.error is not None and e.value.error.code == "cancelled"


def test_cancel_of_a_succeeded_request_is_a_conflict(client: Client) -> None:
    done = client.wait(client.submit("demo", {"steps": 1, "sleepMs": 10}).id, timeout=60)
    with pytest.raises(ApiError) as e:
        client.cancel(done.id)
    assert (e.value.status, e.value.code, e.value.request_status) == (409, "conflict", "SUCCEEDED")


def test_list_follows_every_page_newest_first(client: Client) -> None:
    ids = [client.submit("pages", {"steps": 0}, metadata={"i": str(i)}).id for i in range(5)]
    for id in ids:
        client.wait(id, timeout=60)

    page, cursor = client.list_page("pages", limit=2)
    assert [r.id for r in page] == ids[::-1][:2]
    assert cursor is not None
    assert all(r.input is None for r in page)  # list items leave out the input

    listed = [r.id for r in client.list("pages", limit=2)]
    assert listed == ids[::-1]
    assert [r.id for r in client.list("pages", status="SUCCEEDED")] == ids[::-1]
    assert list(client.list("pages", status=["FAILED", "CANCELLED"])) == []
    assert [r.id for r in client.list("pages")] == ids[::-1]


def test_logs_read_and_followed(client: Client) -> None:
    request = client.submit("demo", {"steps": 4, "sleepMs": 150})
    followed = list(client.logs(request.id, follow=True))
    assert client.get(request.id).status == "SUCCEEDED"
    assert [line for line in followed if line.startswith("demo: step")] == [
        f"demo: step {i}/4" for i in range(1, 5)
    ]
    assert list(client.logs(request.id)) == followed

    lines, cursor = client.logs_page(request.id, limit=1)
    more, _ = client.logs_page(request.id, cursor, limit=100)
    assert lines + more == followed


def test_wait_gives_up_after_its_timeout(client: Client) -> None:
    request = client.submit("demo", {"steps": 100, "sleepMs": 200})
    with pytest.raises(TimeoutError):
        client.wait(request.id, timeout=0.3)
    client.cancel(request.id)


def test_errors_are_api_errors_with_status_code_and_detail(server: Server) -> None:
    alice = server.client(ALICE)
    with pytest.raises(ApiError) as e:
        alice.get("req_01JD3AAAAAAAAAAAAAAAAAAAAA")
    assert (e.value.status, e.value.code) == (404, "not_found")
    assert e.value.detail

    with pytest.raises(ApiError) as e:
        server.client("not-a-token").get("req_01JD3AAAAAAAAAAAAAAAAAAAAA")
    assert (e.value.status, e.value.code) == (401, "unauthorized")

    with pytest.raises(ApiError) as e:
        alice.submit("no-such-queue", {})
    assert (e.value.status, e.value.code) == (404, "not_found")

    with pytest.raises(ApiError) as e:
        alice.submit("demo", {}, priority=12)
    assert (e.value.status, e.value.code) == (400, "invalid_request")
    assert "priority" in e.value.detail

    running = alice.submit("demo", {"steps": 100, "sleepMs": 200})
    with pytest.raises(ApiError) as e:
        alice.result(running.id)
    assert e.value.code == "not_ready"
    assert e.value.request_status in ("QUEUED", "STARTING", "RUNNING")
    # Another tenant's request does not exist for bob.
    with pytest.raises(ApiError) as e:
        server.client(BOB).get(running.id)
    assert (e.value.status, e.value.code) == (404, "not_found")
    alice.cancel(running.id)


def test_webhook_secret(client: Client) -> None:
    secret = client.webhook_secret()
    assert secret.startswith("whsec_")
    assert client.webhook_secret() == secret
