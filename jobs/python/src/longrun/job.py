"""`longrun.job`: the job contract (SPEC §4) for Python jobs, one call per rule.

    from longrun import job

    params = job.input                               # the request's input (parsed JSON)
    state = job.load_checkpoint()                    # None on a first attempt
    for epoch in range(start, epochs):
        if job.stop_requested():                     # SIGTERM: cancel, timeout, Spot
            job.exit_stopped(checkpoint=state)       # saves it, then exits 143
        state = train_one_epoch(state)
        job.progress(epoch + 1, epochs, f"epoch {epoch + 1}", checkpoint=state)
    job.write_result({"loss": loss})                 # becomes the request's `output`

The runner saves the checkpoint folder each time the progress file changes, so a job must
write its checkpoint before it reports progress; `progress(..., checkpoint=state)` does both
in that order. Every file is written atomically (a temp file in the same folder, fsync,
rename), so the runner never saves half a checkpoint.

The attributes `input`, `input_dir`, `output_dir`, `checkpoint_dir`, `attempt`,
`request_id` and `queue` are read from the environment when first used; outside a job that
longrun started they raise `NotInJobError`, which says what is missing.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Dict, Generator, NoReturn, Optional, Union, cast

# Declared for type checkers; the values come from the module __getattr__ below, when used.
#: The request's `input`: any JSON value, parsed.
input: Any
#: The request's uploaded files (read-only), by the names given in the submit's `files`.
input_dir: Path
#: Empty at the start; after exit 0, `result.json` there is the output, every other file
#: an artifact.
output_dir: Path
#: What earlier attempts left (empty on attempt 1).
checkpoint_dir: Path
#: 1 for the first attempt, 2 for the first retry, ...
attempt: int
request_id: str
queue: str

#: What the checkpoint helpers save and load when no name is given.
DEFAULT_CHECKPOINT = "state.pkl"
#: The exit code of a job that stopped on SIGTERM (128 + 15), as a shell reports it.
STOPPED_EXIT_CODE = 143

_VARS = {
    "input_file": "LONGRUN_INPUT_FILE",
    "input_dir": "LONGRUN_INPUT_DIR",
    "output_dir": "LONGRUN_OUTPUT_DIR",
    "checkpoint_dir": "LONGRUN_CHECKPOINT_DIR",
    "progress_file": "LONGRUN_PROGRESS_FILE",
    "attempt": "LONGRUN_ATTEMPT",
    "request_id": "LONGRUN_REQUEST_ID",
    "queue": "LONGRUN_QUEUE",
}
# SPEC §2: the names a submit may give its files.
_FILE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_TEMP_MARK = ".longrun-tmp-"


class NotInJobError(RuntimeError):
    """`longrun.job` was used outside a job that longrun started."""


def _env(attr: str) -> str:
    name = _VARS[attr]
    value = os.environ.get(name)
    if not value:
        raise NotInJobError(
            f"{name} is not set: longrun.job works inside a job that longrun started "
            "(SPEC §4 sets LONGRUN_INPUT_FILE, LONGRUN_INPUT_DIR, LONGRUN_OUTPUT_DIR, "
            "LONGRUN_CHECKPOINT_DIR, LONGRUN_PROGRESS_FILE and LONGRUN_ATTEMPT). To try a "
            "job by hand, set them yourself to files and folders of your choice."
        )
    return value


_input_cache: Dict[str, Any] = {}


def _read_input() -> Any:
    path = _env("input_file")
    if path not in _input_cache:
        with open(path, encoding="utf-8") as f:
            _input_cache[path] = json.load(f)
    return _input_cache[path]


def __getattr__(name: str) -> Any:
    if name == "input":
        return _read_input()
    if name in ("input_dir", "output_dir", "checkpoint_dir"):
        return Path(_env(name))
    if name == "attempt":
        return int(_env(name))
    if name in ("request_id", "queue"):
        return _env(name)
    raise AttributeError(f"module 'longrun.job' has no attribute {name!r}")


# ---- files ---------------------------------------------------------------------------


@contextmanager
def atomic_file(path: Union[str, "os.PathLike[str]"]) -> Generator[IO[bytes], None, None]:
    """Opens a temp file next to `path` for writing; renames it over `path` on success.

    A reader (the runner saving the checkpoint folder) sees the old file or the new one,
    never a part. On an exception the temp file is removed and `path` left as it was.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}{_TEMP_MARK}", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def input_path(name: str) -> Path:
    """The uploaded input file `name` (a key of the submit's `files`), which must exist.

    The name is checked as the API checks it, so an input naming `../x` cannot lead the
    job out of its input folder.
    """
    if not _FILE_NAME.match(name) or name in (".", ".."):
        raise ValueError(f"{name!r} is not a file name longrun gives inputs ([A-Za-z0-9._-])")
    folder = Path(_env("input_dir"))
    path = folder / name
    if not path.is_file():
        present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise FileNotFoundError(
            f"no input file {name!r}: the request's files are {present or 'none'} "
            "(submit it with files={name: path or upload id})"
        )
    return path


def write_result(output: Any) -> Path:
    """Writes `output` as `result.json`, which becomes the request's output after exit 0."""
    path = Path(_env("output_dir")) / "result.json"
    with atomic_file(path) as f:
        f.write(json.dumps(output).encode("utf-8"))
    return path


# ---- progress and checkpoints --------------------------------------------------------


class _Nothing:
    """Marks "no checkpoint given" (None is a state a job may save)."""


_NOTHING: Any = _Nothing()


def progress(
    current: float,
    total: Optional[float] = None,
    message: str = "",
    *,
    checkpoint: Any = _NOTHING,
) -> None:
    """Reports progress; the request's status shows it within a few seconds.

    With `checkpoint`, saves it first (as `save_checkpoint` does), so the folder the runner
    saves on this progress change holds the state this progress describes.
    """
    for value in (current, total):
        # Checked at run time too: a bool, a string or NaN would make a file the runner skips.
        number: Any = value
        if number is not None and (
            isinstance(number, bool)
            or not isinstance(number, (int, float))
            or not math.isfinite(number)
        ):
            raise ValueError(f"progress counts are finite numbers, not {value!r}")
    if checkpoint is not _NOTHING:
        save_checkpoint(checkpoint)
    body = {"current": current, "total": total, "message": str(message)}
    with atomic_file(_env("progress_file")) as f:
        f.write(json.dumps(body).encode("utf-8"))


class _Format:
    """How the checkpoint helpers write and read a state, set by `configure_checkpoints`."""

    name: str = DEFAULT_CHECKPOINT
    dump: Callable[[Any, IO[bytes]], Any] = staticmethod(pickle.dump)
    load: Callable[[IO[bytes]], Any] = staticmethod(pickle.load)


_format = _Format()


def configure_checkpoints(
    *,
    name: Optional[str] = None,
    dump: Optional[Callable[[Any, IO[bytes]], Any]] = None,
    load: Optional[Callable[[IO[bytes]], Any]] = None,
) -> None:
    """Sets the file name and the serializer of `save_checkpoint` and `load_checkpoint`.

    The default is pickle into `state.pkl`. A PyTorch job may prefer
    `configure_checkpoints(name="checkpoint.pt", dump=torch.save,
    load=lambda f: torch.load(f, map_location=device))`.
    """
    if name is not None:
        _format.name = name
    if dump is not None:
        _format.dump = dump
    if load is not None:
        _format.load = load


def save_checkpoint(state: Any, name: Optional[str] = None) -> Path:
    """Saves a checkpoint atomically in the checkpoint folder; returns its path.

    `state` is any object, written by the configured serializer (pickle by default) as
    `name` (default: the configured name, `state.pkl`); or a `pathlib.Path` to a file the
    job wrote elsewhere, copied in as `name` (default: the file's own name). A plain string
    is refused as ambiguous: wrap it in `Path(...)` to copy a file.
    """
    folder = Path(_env("checkpoint_dir"))
    if isinstance(state, str):
        raise TypeError(
            "save_checkpoint(str) is ambiguous: pass Path(...) to copy a file, or put the "
            "string in a container (a dict, a list) to save it as state"
        )
    if isinstance(state, os.PathLike):
        source = Path(cast("os.PathLike[str]", state))
        if source.is_dir():
            raise IsADirectoryError(f"{source} is a folder: save its files one by one")
        target = folder / (name or source.name)
        if target.resolve() != source.resolve():
            with atomic_file(target) as f, open(source, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)
        return target
    target = folder / (name or _format.name)
    with atomic_file(target) as f:
        _format.dump(state, f)
    return target


def load_checkpoint(name: Optional[str] = None, default: Any = None) -> Any:
    """The state `save_checkpoint` saved as `name` in an earlier attempt, else `default`.

    Temp files an attempt killed mid-write left behind are removed first.
    """
    folder = Path(_env("checkpoint_dir"))
    for leftover in folder.glob(f".*{_TEMP_MARK}*"):
        leftover.unlink(missing_ok=True)
    path = folder / (name or _format.name)
    if not path.is_file():
        return default
    with open(path, "rb") as f:
        return _format.load(f)


def checkpoint_path(name: str) -> Optional[Path]:
    """The checkpoint file `name` if an earlier attempt saved it, else None."""
    path = Path(_env("checkpoint_dir")) / name
    return path if path.is_file() else None


# ---- stopping ------------------------------------------------------------------------

_stop = threading.Event()
_handler_lock = threading.Lock()
_handler_installed = False


def _on_sigterm(signum: int, frame: Any) -> None:
    _stop.set()


def stop_requested() -> bool:
    """True once the job got SIGTERM (a cancel, the timeout, a Spot interruption).

    The first call installs the SIGTERM handler (so call it once early, from the main
    thread); until then SIGTERM ends the process as usual. Afterwards SIGTERM only sets
    the flag: the job should save its checkpoint and exit (`exit_stopped`) soon, since
    the runner sends SIGKILL after the queue's `cancelGraceSeconds`.
    """
    global _handler_installed
    with _handler_lock:
        if not _handler_installed:
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("call longrun.job.stop_requested() first from the main thread")
            signal.signal(signal.SIGTERM, _on_sigterm)
            _handler_installed = True
    return _stop.is_set()


def exit_stopped(*, checkpoint: Any = _NOTHING, message: str = "") -> NoReturn:
    """Saves `checkpoint` (if given), prints `message`, and exits with 143 (SIGTERM's)."""
    saved = checkpoint is not _NOTHING
    if saved:
        save_checkpoint(checkpoint)
    print(message or f"longrun.job: stopped on SIGTERM{', checkpoint saved' if saved else ''}")
    sys.stdout.flush()
    raise SystemExit(STOPPED_EXIT_CODE)
