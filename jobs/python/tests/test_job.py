"""longrun.job: in-process, as a real job process under SIGTERM, and under the real runner."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Dict, List

import pytest
from support import STEPS_JOB, Server, job_env, wait_until

from longrun import job


@pytest.fixture()
def in_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test process as a job: the SPEC §4 variables point into tmp_path."""
    for name, value in job_env(tmp_path, attempt=2).items():
        if name.startswith("LONGRUN_"):
            monkeypatch.setenv(name, value)
    (tmp_path / "input.json").write_text(json.dumps({"epochs": 4}))
    return tmp_path


def test_outside_longrun_every_use_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LONGRUN_"):
            monkeypatch.delenv(name)
    with pytest.raises(job.NotInJobError, match="LONGRUN_INPUT_FILE is not set"):
        _ = job.input
    with pytest.raises(job.NotInJobError, match="LONGRUN_CHECKPOINT_DIR is not set"):
        job.save_checkpoint({"a": 1})
    with pytest.raises(job.NotInJobError, match="LONGRUN_PROGRESS_FILE"):
        job.progress(1, 2)
    with pytest.raises(AttributeError):
        _ = job.no_such_thing  # pyright: ignore[reportAttributeAccessIssue]


def test_input_folders_and_attempt_come_from_the_environment(in_job: Path) -> None:
    assert job.input == {"epochs": 4}
    assert job.attempt == 2
    assert (job.request_id, job.queue) == ("req_by_hand", "by-hand")
    assert job.input_dir == in_job / "input"
    assert job.output_dir == in_job / "output"
    assert job.checkpoint_dir == in_job / "checkpoint"


def test_progress_with_a_checkpoint_saves_the_checkpoint_first(
    in_job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: List[str] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        order.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    job.progress(1, 4, "epoch 1", checkpoint={"epoch": 1})
    assert order == ["state.pkl", "progress.json"]
    assert json.loads((in_job / "progress.json").read_text()) == {
        "current": 1,
        "total": 4,
        "message": "epoch 1",
    }
    assert job.load_checkpoint() == {"epoch": 1}


def test_progress_refuses_counts_the_runner_could_not_read(in_job: Path) -> None:
    for bad in (float("nan"), float("inf"), True, "3"):
        with pytest.raises(ValueError, match="finite numbers"):
            job.progress(bad, 10)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError):
        job.progress(1, float("nan"))
    assert not (in_job / "progress.json").exists()
    job.progress(0.5, None, "half-way, total unknown")
    assert json.loads((in_job / "progress.json").read_text())["total"] is None


def test_a_checkpoint_that_cannot_be_saved_reports_no_progress(in_job: Path) -> None:
    job.progress(1, 4, checkpoint={"epoch": 1})

    class Unpicklable:
        def __reduce__(self) -> Any:
            raise TypeError("no")

    with pytest.raises(TypeError):
        job.progress(2, 4, checkpoint={"epoch": 2, "bad": Unpicklable()})
    # Neither file moved on, and no temp file is left in the folder the runner saves.
    assert json.loads((in_job / "progress.json").read_text())["current"] == 1
    assert job.load_checkpoint() == {"epoch": 1}
    assert sorted(p.name for p in job.checkpoint_dir.iterdir()) == ["state.pkl"]


def test_checkpoints_of_objects_and_files(in_job: Path, tmp_path: Path) -> None:
    assert job.load_checkpoint() is None
    assert job.load_checkpoint(default={"epoch": 0}) == {"epoch": 0}
    assert job.checkpoint_path("weights.bin") is None

    saved = job.save_checkpoint({"epoch": 3, "weights": [1.5, 2.5]})
    assert saved == job.checkpoint_dir / "state.pkl"
    assert pickle.loads(saved.read_bytes()) == {"epoch": 3, "weights": [1.5, 2.5]}

    weights = tmp_path / "elsewhere.bin"
    weights.write_bytes(b"\x00\x01" * 1000)
    copied = job.save_checkpoint(weights, "weights.bin")
    assert copied.read_bytes() == weights.read_bytes()
    assert job.checkpoint_path("weights.bin") == copied
    # A file already in the checkpoint folder is left as it is.
    assert job.save_checkpoint(copied) == copied

    with pytest.raises(TypeError, match="ambiguous"):
        job.save_checkpoint("weights.bin")
    with pytest.raises(IsADirectoryError):
        job.save_checkpoint(tmp_path)


def test_load_removes_what_an_attempt_killed_mid_write_left(in_job: Path) -> None:
    job.save_checkpoint({"epoch": 1})
    leftover = job.checkpoint_dir / ".state.pkl.longrun-tmp-abc123"
    leftover.write_bytes(b"half a pickle")
    assert job.load_checkpoint() == {"epoch": 1}
    assert not leftover.exists()


def test_configured_serializer(in_job: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job, "_format", job._Format())  # pyright: ignore[reportPrivateUsage]

    def dump(obj: Any, f: IO[bytes]) -> None:
        f.write(json.dumps(obj).encode())

    def load(f: IO[bytes]) -> Any:
        return json.loads(f.read())

    job.configure_checkpoints(name="state.json", dump=dump, load=load)
    job.progress(2, 4, checkpoint={"epoch": 2})
    assert json.loads((job.checkpoint_dir / "state.json").read_text()) == {"epoch": 2}
    assert job.load_checkpoint() == {"epoch": 2}


def test_input_path_and_write_result(in_job: Path) -> None:
    (job.input_dir / "train.csv").write_text("1,2,0\n")
    assert job.input_path("train.csv") == job.input_dir / "train.csv"
    with pytest.raises(FileNotFoundError, match=r"\['train.csv'\]"):
        job.input_path("other.csv")
    for bad in ("../input.json", "a/b", "..", ""):
        with pytest.raises(ValueError):
            job.input_path(bad)

    path = job.write_result({"loss": 0.5})
    assert path == job.output_dir / "result.json"
    assert json.loads(path.read_text()) == {"loss": 0.5}


def run_steps(work: Path, inp: Dict[str, Any], attempt: int) -> "subprocess.Popen[str]":
    env = job_env(work, attempt)
    Path(env["LONGRUN_INPUT_FILE"]).write_text(json.dumps(inp))
    return subprocess.Popen(
        [sys.executable, str(STEPS_JOB)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigterm_stops_the_job_with_its_checkpoint_and_a_new_attempt_resumes(
    tmp_path: Path,
) -> None:
    progress = tmp_path / "progress.json"
    proc = run_steps(tmp_path, {"steps": 10_000, "sleep": 0.01}, attempt=1)
    wait_until("3 steps", lambda: progress.exists() and json.loads(progress.read_text())["current"] >= 3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == job.STOPPED_EXIT_CODE
    assert "steps: SIGTERM at" in out

    stopped_at = pickle.loads((tmp_path / "checkpoint" / "state.pkl").read_bytes())["done"]
    reported = json.loads(progress.read_text())["current"]
    # The checkpoint holds at least the reported progress (it is written first), and the
    # step the job was at when it stopped.
    assert stopped_at >= reported >= 3

    resumed = run_steps(tmp_path, {"steps": stopped_at + 2, "sleep": 0.01}, attempt=2)
    out, _ = resumed.communicate(timeout=30)
    assert resumed.returncode == 0, out
    result = json.loads((tmp_path / "output" / "result.json").read_text())
    assert result == {"done": stopped_at + 2, "resumedFrom": stopped_at, "attempt": 2}


def test_a_failed_attempt_resumes_from_its_checkpoint_under_the_runner(server: Server) -> None:
    client = server.client()
    request = client.submit("steps", {"steps": 6, "failAt": 4})
    done = client.wait(request.id, timeout=60)
    assert (done.status, done.attempt) == ("SUCCEEDED", 2)
    result = client.result(request.id)
    assert result.output == {"done": 6, "resumedFrom": 4, "attempt": 2}
    assert [a.name for a in result.artifacts] == ["note.txt"]
    logs = list(client.logs(request.id))
    assert "steps: attempt 2 of %s starts at 4" % request.id in logs


def test_a_cancel_stops_the_job_through_stop_requested(server: Server) -> None:
    client = server.client()
    request = client.submit("steps", {"steps": 10_000, "sleep": 0.01})
    wait_until("progress", lambda: (p := client.get(request.id).progress) and p.current >= 2)
    client.cancel(request.id)
    assert client.wait(request.id, timeout=60).status == "CANCELLED"
    assert any(line.startswith("steps: SIGTERM at") for line in client.logs(request.id))


def test_after_a_server_kill_the_job_resumes_at_least_where_its_progress_was(
    fresh_server: Server,
) -> None:
    client = fresh_server.client()
    request = client.submit("steps", {"steps": 40, "sleep": 0.1})
    seen = wait_until(
        "progress", lambda: (p := client.get(request.id).progress) and p.current >= 3 and p
    )
    fresh_server.kill()
    fresh_server.start()
    client = fresh_server.client()
    done = client.wait(request.id, timeout=120)
    assert done.status == "SUCCEEDED"
    # The runner saved the checkpoint when it saw that progress; the checkpoint was written
    # before it, so the next attempt starts no earlier than the progress seen.
    assert client.result(request.id).output["resumedFrom"] >= seen.current
