"""The package builds with the standard library alone and installs with no package index."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from support import PACKAGE_ROOT

import longrun
import longrun_build as backend


def test_the_wheel_holds_the_typed_package_and_a_valid_record(tmp_path: Path) -> None:
    name = backend.build_wheel(str(tmp_path))
    assert name == f"longrun-{longrun.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(tmp_path / name) as wheel:
        names = set(wheel.namelist())
        dist_info = f"longrun-{longrun.__version__}.dist-info"
        assert {
            "longrun/__init__.py",
            "longrun/client.py",
            "longrun/job.py",
            "longrun/py.typed",
            f"{dist_info}/METADATA",
            f"{dist_info}/WHEEL",
            f"{dist_info}/RECORD",
        } <= names
        assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
        metadata = wheel.read(f"{dist_info}/METADATA").decode()
        assert f"Version: {longrun.__version__}\n" in metadata
        assert "Requires-Python: >=3.9\n" in metadata
        assert "Requires-Dist" not in metadata
        for line in wheel.read(f"{dist_info}/RECORD").decode().splitlines():
            path, digest, size = line.split(",")
            if path.endswith("RECORD"):
                continue
            data = wheel.read(path)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert (digest, int(size)) == (f"sha256={expected.decode()}", len(data))


def test_builds_are_reproducible(tmp_path: Path) -> None:
    first, second = tmp_path / "1", tmp_path / "2"
    for folder in (first, second):
        backend.build_wheel(str(folder))
        backend.build_sdist(str(folder))
    for name in (p.name for p in first.iterdir()):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_the_sdist_holds_what_builds_the_wheel_again(tmp_path: Path) -> None:
    name = backend.build_sdist(str(tmp_path))
    base = f"longrun-{longrun.__version__}"
    assert name == f"{base}.tar.gz"
    with tarfile.open(tmp_path / name) as sdist:
        names = set(sdist.getnames())
    assert {
        f"{base}/pyproject.toml",
        f"{base}/PKG-INFO",
        f"{base}/build_backend/longrun_build.py",
        f"{base}/src/longrun/py.typed",
        f"{base}/src/longrun/job.py",
    } <= names


def test_the_fallback_pyproject_reader_agrees_with_tomllib() -> None:
    text = (PACKAGE_ROOT / "pyproject.toml").read_text()
    expected = tomllib.loads(text)["project"]
    assert backend._read_project_table(text) == expected  # pyright: ignore[reportPrivateUsage]
    with pytest.raises(ValueError, match="cannot read"):
        backend._read_project_table('[project]\nname = {a = 1}\n')  # pyright: ignore[reportPrivateUsage]


def venv(tmp_path: Path) -> Path:
    """A fresh venv; without a pip of its own, which is slow to set up (see pip_install)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    return tmp_path / "venv" / "bin" / "python"


def pip_install(python: Path, target: str) -> None:
    # This Python's pip installs into the venv (`--python`). --no-index: nothing may come
    # from a package index, not even for the build, which runs with build isolation on
    # (pip's default) in an environment of its own.
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--no-cache-dir", target],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_pip_installs_the_folder_offline_into_a_fresh_venv(tmp_path: Path) -> None:
    python = venv(tmp_path)
    pip_install(python, str(PACKAGE_ROOT))
    probe = (
        "import longrun, longrun.job, pathlib;"
        "print(longrun.__version__);"
        "print(pathlib.Path(longrun.__file__).parent.joinpath('py.typed').exists());"
        "print(longrun.Client('http://x', 't').url)"
    )
    out = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout.split()
    assert out == [longrun.__version__, "True", "http://x"]


def test_pip_installs_the_sdist_offline(tmp_path: Path) -> None:
    sdist = backend.build_sdist(str(tmp_path / "dist"))
    python = venv(tmp_path)
    pip_install(python, str(tmp_path / "dist" / sdist))
    out = subprocess.run(
        [str(python), "-c", "import longrun; print(longrun.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert out == longrun.__version__


def test_an_editable_install_imports_the_source_folder(tmp_path: Path) -> None:
    python = venv(tmp_path)
    pip_install(python, f"--editable={PACKAGE_ROOT}")
    out = subprocess.run(
        [str(python), "-c", "import longrun; print(longrun.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert out == str(PACKAGE_ROOT / "src" / "longrun" / "__init__.py")
