"""The in-tree PEP 517 build backend of the longrun package (PEP 517, PEP 660).

It builds the pure-Python wheel and the sdist with the standard library alone, so that
`pip install ./jobs/python` works with build isolation on and no package index: the
pyproject's `requires = []` leaves pip nothing to download. The project's metadata has one
home, the `[project]` table of pyproject.toml; this module only reads it.

Archives are reproducible: entries are sorted and dated SOURCE_DATE_EPOCH (or 1980-01-01).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "longrun"
SOURCE = ROOT / "src" / PACKAGE
WHEEL_TAG = "py3-none-any"


def read_project(text: str) -> Dict[str, Any]:
    """The `[project]` table of a pyproject.toml text."""
    try:
        import tomllib  # pyright: ignore[reportMissingTypeStubs]  # Python >= 3.11
    except ModuleNotFoundError:
        return _read_project_table(text)
    return dict(tomllib.loads(text).get("project", {}))


_STRING = r'"(?:[^"\\]|\\.)*"'
_KEY_VALUE = re.compile(
    rf"^([A-Za-z0-9_-]+)\s*=\s*({_STRING}|\[\s*(?:{_STRING}\s*,?\s*)*\])\s*(?:#.*)?$"
)


def _read_project_table(text: str) -> Dict[str, Any]:
    """The `[project]` table for Pythons without tomllib (3.9, 3.10).

    It reads the subset of TOML this project's pyproject.toml uses there: one-line
    `key = "string"` and `key = ["string", ...]` entries. Anything else in the table is an
    error rather than a guess, and the tests compare the result with tomllib's.
    """
    table: Dict[str, Any] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.split("#", 1)[0].strip()
            continue
        if section != "[project]":
            continue
        m = _KEY_VALUE.match(line)
        if not m:
            raise ValueError(f"pyproject.toml: cannot read this [project] line: {raw!r}")
        key, value = m.group(1), m.group(2)
        if value.startswith("["):
            table[key] = [_unquote(s) for s in re.findall(_STRING, value)]
        else:
            table[key] = _unquote(value)
    return table


def _unquote(s: str) -> str:
    return s[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")


def _project() -> Dict[str, Any]:
    project = read_project((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    # The version's one home is the package itself (`longrun.__version__`).
    init = (SOURCE / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "([^"]+)"$', init, re.M)
    if found is None:
        raise ValueError(f"{SOURCE / '__init__.py'} sets no __version__")
    project["version"] = found.group(1)
    return project


def _dist_name(project: Mapping[str, Any]) -> str:
    return re.sub(r"[-_.]+", "_", str(project["name"])).lower()


def _dist_info(project: Mapping[str, Any]) -> str:
    return f"{_dist_name(project)}-{project['version']}.dist-info"


def metadata_text(project: Mapping[str, Any]) -> str:
    """Core metadata (METADATA and PKG-INFO) of the project."""
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
    ]
    if project.get("description"):
        lines.append(f"Summary: {project['description']}")
    if project.get("license"):
        lines.append(f"License: {project['license']}")
    if project.get("requires-python"):
        lines.append(f"Requires-Python: {project['requires-python']}")
    for requirement in project.get("dependencies", []):
        lines.append(f"Requires-Dist: {requirement}")
    body = ""
    if project.get("readme"):
        lines.append("Description-Content-Type: text/markdown")
        body = (ROOT / str(project["readme"])).read_text(encoding="utf-8")
    return "\n".join(lines) + "\n\n" + body


def _wheel_text() -> str:
    return "\n".join(
        [
            "Wheel-Version: 1.0",
            "Generator: longrun_build",
            "Root-Is-Purelib: true",
            f"Tag: {WHEEL_TAG}",
            "",
        ]
    )


def _package_files() -> List[Tuple[str, Path]]:
    """(archive name, file) of every file of the package: modules and py.typed."""
    files: List[Tuple[str, Path]] = []
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".typed"):
            files.append((f"{PACKAGE}/{path.relative_to(SOURCE).as_posix()}", path))
    return files


def _epoch() -> int:
    """SOURCE_DATE_EPOCH, or 1980-01-01 (the earliest date a zip entry can carry)."""
    return max(int(os.environ.get("SOURCE_DATE_EPOCH", "315532800")), 315532800)


def _date_time() -> Tuple[int, int, int, int, int, int]:
    return time.gmtime(_epoch())[:6]


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _write_wheel(wheel_directory: str, entries: List[Tuple[str, bytes]]) -> str:
    project = _project()
    filename = f"{_dist_name(project)}-{project['version']}-{WHEEL_TAG}.whl"
    dist_info = _dist_info(project)
    entries = sorted(entries) + [
        (f"{dist_info}/METADATA", metadata_text(project).encode()),
        (f"{dist_info}/WHEEL", _wheel_text().encode()),
        (f"{dist_info}/top_level.txt", f"{PACKAGE}\n".encode()),
    ]
    record = [_record_line(name, data) for name, data in entries] + [f"{dist_info}/RECORD,,"]
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    os.makedirs(wheel_directory, exist_ok=True)
    target = Path(wheel_directory) / filename
    tmp = target.with_name(f".{filename}.tmp-{os.getpid()}")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_date_time())
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    os.replace(tmp, target)
    return filename


# ---- PEP 517 hooks -------------------------------------------------------------------


def get_requires_for_build_wheel(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def get_requires_for_build_sdist(config_settings: Optional[Dict[str, Any]] = None) -> List[str]:
    return []


def get_requires_for_build_editable(
    config_settings: Optional[Dict[str, Any]] = None,
) -> List[str]:
    return []


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: Optional[Dict[str, Any]] = None
) -> str:
    project = _project()
    dist_info = Path(metadata_directory) / _dist_info(project)
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(metadata_text(project), encoding="utf-8")
    (dist_info / "WHEEL").write_text(_wheel_text(), encoding="utf-8")
    return dist_info.name


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(
    wheel_directory: str,
    config_settings: Optional[Dict[str, Any]] = None,
    metadata_directory: Optional[str] = None,
) -> str:
    return _write_wheel(wheel_directory, [(n, p.read_bytes()) for n, p in _package_files()])


def build_editable(
    wheel_directory: str,
    config_settings: Optional[Dict[str, Any]] = None,
    metadata_directory: Optional[str] = None,
) -> str:
    """PEP 660: a wheel whose .pth file puts the source folder on sys.path."""
    pth = f"{SOURCE.parent}\n".encode()
    return _write_wheel(wheel_directory, [(f"__editable__.{PACKAGE}.pth", pth)])


def build_sdist(sdist_directory: str, config_settings: Optional[Dict[str, Any]] = None) -> str:
    project = _project()
    base = f"{_dist_name(project)}-{project['version']}"
    members = [
        ("pyproject.toml", ROOT / "pyproject.toml"),
        ("README.md", ROOT / "README.md"),
        ("build_backend/longrun_build.py", Path(__file__).resolve()),
    ] + [(f"src/{name}", path) for name, path in _package_files()]
    os.makedirs(sdist_directory, exist_ok=True)
    target = Path(sdist_directory) / f"{base}.tar.gz"
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        contents = [(n, p.read_bytes()) for n, p in sorted(members)]
        contents.append(("PKG-INFO", metadata_text(project).encode()))
        for name, data in contents:
            info = tarfile.TarInfo(f"{base}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, _epoch()
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, target)
    return target.name
