"""Test support: a real embedded longrun server with real jobs, as test/helpers/server.ts starts it.

The server is `node --import tsx functions/local/main.ts` on a free loopback port, with its
own temporary data directory and config; its jobs are real processes (the demo Node job,
the finetune example, and the Python jobs in tests/jobs/ written with longrun.job). The
runner puts jobs/python/src on the jobs' PYTHONPATH, so they import this checkout's package.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent
ROOT = PACKAGE_ROOT.parent.parent
from longrun import Client

DEMO_JOB = ROOT / "jobs" / "examples" / "demo" / "job.mjs"
FINETUNE = ROOT / "jobs" / "examples" / "finetune" / "train.py"
STEPS_JOB = HERE / "jobs" / "steps.py"
ALICE, BOB = "t-alice", "t-bob"


def queues() -> Dict[str, Dict[str, Any]]:
    """The test config's queues; each test file uses the ones it needs."""
    demo = {
        "command": ["node", str(DEMO_JOB)],
        "maxQueued": 100,
        "maxRunning": 4,
        "timeoutSeconds": 120,
        "maxAttempts": 3,
        "queueTtlSeconds": 600,
        "cancelGraceSeconds": 5,
    }
    steps = {
        "command": [sys.executable, str(STEPS_JOB)],
        "maxQueued": 100,
        "maxRunning": 4,
        "timeoutSeconds": 120,
        "maxAttempts": 2,
        "cancelGraceSeconds": 10,
    }
    return {
        "demo": demo,
        # Its own queue, so list tests see exactly the requests they made.
        "pages": {**demo},
        # One running and one queued at most: the third submit is refused with queue_full.
        "tight": {**demo, "maxQueued": 1, "maxRunning": 1},
        "steps": steps,
        "steps-once": {**steps, "maxAttempts": 1},
        "finetune": {
            "command": [sys.executable, str(FINETUNE)],
            "maxRunning": 1,
            "timeoutSeconds": 300,
            "cancelGraceSeconds": 10,
            "env": {"EPOCHS_DEFAULT": "2"},
        },
    }


class Server:
    """A real embedded server in a child process; `kill` and `start` reuse its data dir."""

    def __init__(self, extra_env: Optional[Dict[str, str]] = None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="longrun-pytest-"))
        self.data_dir = self.tmp / "data"
        self.config = self.tmp / "longrun.config.json"
        self.config.write_text(json.dumps({"queues": queues()}, indent=2))
        self.env = {
            **os.environ,
            "LONGRUN_CONFIG": str(self.config),
            "LONGRUN_DATA_DIR": str(self.data_dir),
            "LONGRUN_PORT": "0",
            "LONGRUN_TOKENS": f"{ALICE}:alice,{BOB}:bob",
            "LONGRUN_SWEEP_INTERVAL_MS": "200",
            "LONGRUN_BACKEND": "embedded",
            **(extra_env or {}),
        }
        self.url = ""
        self.output: List[str] = []
        self.proc: Optional[subprocess.Popen[str]] = None

    def start(self, timeout: float = 30.0) -> None:
        self.output = []
        proc = subprocess.Popen(
            ["node", "--import", "tsx", "functions/local/main.ts"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.proc = proc
        ready = threading.Event()

        def drain() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.output.append(line)
                m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
                if m and not ready.is_set():
                    self.url = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(timeout) or not self.url or proc.poll() is not None:
            self.kill()
            raise RuntimeError("the server did not start:\n" + "".join(self.output))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.url = ""

    def dispose(self) -> None:
        self.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def client(self, token: str = ALICE, **kwargs: Any) -> Client:
        return Client(self.url, token, poll_interval=0.1, **kwargs)


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Polls `check` until it returns something truthy; that value. Fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def job_env(work: Path, attempt: int = 1) -> Dict[str, str]:
    """The SPEC §4 environment of a job run by hand in `work` (as the runner lays it out)."""
    for folder in ("input", "output", "checkpoint"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONGRUN_")}
    return {
        **env,
        "PYTHONPATH": str(PACKAGE_ROOT / "src"),
        "PYTHONUNBUFFERED": "1",
        "LONGRUN_REQUEST_ID": "req_by_hand",
        "LONGRUN_QUEUE": "by-hand",
        "LONGRUN_ATTEMPT": str(attempt),
        "LONGRUN_INPUT_FILE": str(work / "input.json"),
        "LONGRUN_INPUT_DIR": str(work / "input"),
        "LONGRUN_OUTPUT_DIR": str(work / "output"),
        "LONGRUN_CHECKPOINT_DIR": str(work / "checkpoint"),
        "LONGRUN_PROGRESS_FILE": str(work / "progress.json"),
    }


#: Input that makes the finetune example train in a second or two.
FAST = {"epochs": 2, "stepsPerEpoch": 300, "batchSize": 32, "hiddenUnits": 32, "learningRate": 0.2}


def blobs(n: int = 300) -> List[Tuple[List[float], int]]:
    """Three well separated clusters in 4 features, on a scale far from [-1, 1]."""
    rng = random.Random(5)
    centers = [(100.0, 0.0, 50.0, -20.0), (140.0, 30.0, 10.0, 0.0), (80.0, 60.0, 90.0, 40.0)]
    rows = []
    for i in range(n):
        label = i % 3
        rows.append(([c + rng.gauss(0, 4) for c in centers[label]], label))
    return rows
