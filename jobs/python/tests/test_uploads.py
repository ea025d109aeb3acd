"""Uploads and retry through longrun.Client, on a real embedded server with real jobs.

The finetune example reads an uploaded training file here end to end (issue 12, point 3).
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
import uuid
from pathlib import Path

import pytest
from support import ALICE, BOB, FAST, Server, blobs

from longrun import ApiError, Client


@pytest.fixture()
def train_csv(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("".join(",".join(f"{v:.3f}" for v in x) + f",{y}\n" for x, y in blobs()))
    return path


def test_upload_then_a_finetune_reads_it(client: Client, train_csv: Path) -> None:
    upload_id = client.upload(train_csv)
    assert upload_id.startswith("upl_")
    upload = client.get_upload(upload_id)
    assert (upload.id, upload.filename, upload.size, upload.status) == (
        upload_id,
        "train.csv",
        train_csv.stat().st_size,
        "READY",
    )
    assert upload.expires_at is not None and upload.created_at is not None
    assert upload.expires_at > upload.created_at

    request = client.submit(
        "finetune", {**FAST, "trainFile": "data.csv"}, files={"data.csv": upload_id}
    )
    assert request.files == {"data.csv": train_csv.stat().st_size}
    done = client.wait(request.id, timeout=180)
    assert done.status == "SUCCEEDED", list(client.logs(request.id))
    output = client.result(request.id).output
    digest = hashlib.sha256(train_csv.read_bytes()).hexdigest()
    assert output["data"] == f"data.csv:sha256:{digest}"
    assert (output["examples"], output["classes"]) == (300, 3)
    assert output["accuracy"] > 0.95


def test_submit_uploads_local_paths_and_one_upload_feeds_many_requests(
    client: Client, train_csv: Path
) -> None:
    first = client.submit("steps", {"steps": 1}, files={"a.csv": train_csv})
    second = client.submit("steps", {"steps": 1}, files={"a.csv": train_csv, "b": train_csv})
    for request in (first, second):
        assert client.wait(request.id, timeout=60).status == "SUCCEEDED"
    size = train_csv.stat().st_size
    assert client.get(second.id).files == {"a.csv": size, "b": size}


def test_upload_with_a_checksum(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 4000)
    upload_id = client.upload(path, checksum=True)
    assert client.get_upload(upload_id).status == "READY"


def test_uploads_are_the_tenant_s_own_and_must_be_ready(server: Server, train_csv: Path) -> None:
    alice, bob = server.client(ALICE), server.client(BOB)
    upload_id = alice.upload(train_csv)
    with pytest.raises(ApiError) as e:
        bob.get_upload(upload_id)
    assert (e.value.status, e.value.code) == (404, "not_found")
    with pytest.raises(ApiError) as e:
        bob.submit("steps", {}, files={"x": upload_id})
    assert (e.value.status, e.value.code) == (400, "invalid_request")

    # An upload whose bytes never came stays PENDING and cannot feed a request.
    req = urllib.request.Request(
        f"{server.url}/v1/uploads",
        data=json.dumps({"filename": "never.csv", "size": 10}).encode(),
        headers={"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req) as res:
        pending = json.load(res)["id"]
    assert alice.get_upload(pending).status == "PENDING"
    with pytest.raises(ApiError) as e:
        alice.submit("steps", {}, files={"x": pending})
    assert (e.value.status, e.value.code) == (400, "invalid_request")
    assert pending in e.value.detail or "x" in e.value.detail


def test_retry_resumes_a_failed_request_from_its_checkpoint(client: Client) -> None:
    failed = client.wait(client.submit("steps-once", {"steps": 6, "failAt": 4}).id, timeout=60)
    assert failed.status == "FAILED"

    retried = client.retry(failed.id)
    assert retried.id != failed.id
    assert (retried.retry_of, retried.input) == (failed.id, {"steps": 6, "failAt": 4})
    assert client.wait(retried.id, timeout=60).status == "SUCCEEDED"
    assert client.result(retried.id).output == {"done": 6, "resumedFrom": 4, "attempt": 1}
    # The old request is as it was.
    assert client.get(failed.id).status == "FAILED"

    clean = client.retry(failed.id, from_checkpoint=False)
    assert client.wait(clean.id, timeout=60).status == "FAILED"  # fails at step 4 again
    assert f"steps: attempt 1 of {clean.id} starts at 0" in list(client.logs(clean.id))


def test_retry_with_an_idempotency_key_and_retry_conflicts(client: Client) -> None:
    failed = client.wait(client.submit("steps-once", {"steps": 2, "failAt": 1}).id, timeout=60)
    key = f"retry-{uuid.uuid4()}"
    first = client.retry(failed.id, idempotency_key=key)
    again = client.retry(failed.id, idempotency_key=key)
    assert (again.id, first.replayed, again.replayed) == (first.id, False, True)

    succeeded = client.wait(first.id, timeout=60)
    assert succeeded.status == "SUCCEEDED"
    with pytest.raises(ApiError) as e:
        client.retry(succeeded.id)
    assert (e.value.status, e.value.code) == (409, "conflict")
