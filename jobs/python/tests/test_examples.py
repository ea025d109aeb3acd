"""The finetune example's training file (issue 12, point 3) and the reader both examples use.

The example runs as a real process with the SPEC §4 environment laid out by hand; the run
through the server with an uploaded file is in test_uploads.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
from support import FAST, FINETUNE, blobs, job_env

from longrun.data import read_labelled

def run_example(work: Path, inp: Dict[str, Any]) -> Tuple[int, str, Any]:
    env = job_env(work)
    Path(env["LONGRUN_INPUT_FILE"]).write_text(json.dumps(inp))
    proc = subprocess.run(
        [sys.executable, str(FINETUNE)], env=env, capture_output=True, text=True, timeout=120
    )
    result_file = work / "output" / "result.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    return proc.returncode, proc.stdout + proc.stderr, result


def test_the_example_trains_on_an_uploaded_csv(tmp_path: Path) -> None:
    rows = blobs()
    csv = "f1,f2,f3,f4,label\n" + "".join(
        ",".join(f"{v:.3f}" for v in x) + f",{y}\n" for x, y in rows
    )
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "train.csv").write_text(csv)
    code, out, result = run_example(tmp_path, {**FAST, "trainFile": "train.csv"})
    assert code == 0, out
    assert (result["examples"], result["classes"]) == (len(rows), 3)
    assert result["data"].startswith("train.csv:sha256:")
    assert result["accuracy"] > 0.95
    assert (tmp_path / "output" / "model.npz").stat().st_size > 1000


def test_the_example_trains_on_jsonl_and_resumes_only_with_the_same_file(tmp_path: Path) -> None:
    rows = blobs()
    lines = "".join(json.dumps({"features": x, "label": y}) + "\n" for x, y in rows)
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "train.jsonl").write_text(lines)
    code, out, result = run_example(tmp_path, {**FAST, "trainFile": "train.jsonl"})
    assert code == 0, out
    assert result["accuracy"] > 0.95
    assert "starting, 2 epochs on train.jsonl:sha256:" in out

    # The checkpoint of that run is made with that file: another file starts over.
    (tmp_path / "input" / "train.jsonl").write_text(lines + lines)
    (tmp_path / "output" / "result.json").unlink()
    code, out, result = run_example(tmp_path, {**FAST, "epochs": 3, "trainFile": "train.jsonl"})
    assert code == 0, out
    assert "starting over" in out
    assert (result["examples"], result["resumedFromEpoch"]) == (2 * len(rows), 0)


def test_without_a_train_file_the_example_uses_its_spirals(tmp_path: Path) -> None:
    code, out, result = run_example(tmp_path, {**FAST, "epochs": 1})
    assert code == 0, out
    assert (result["data"], result["examples"], result["classes"]) == ("synthetic", 3000, 3)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.csv", None, "no input file 'missing.csv'"),
        ("../input.json", None, "is not a file name"),
        ("bad.csv", "1,2,0\n1,x,1\n", "line 2: 'x' is not a number"),
        ("bad.jsonl", '{"features": [1], "label": 0.5}\n', "line 1: the label 0.5"),
        ("ragged.csv", "1,2,0\n1,2,3,1\n", "line 2: 3 features where line 1 has 2"),
        ("data.txt", "1,2,0\n", "expected a .csv or .jsonl file"),
    ],
)
def test_a_bad_train_file_fails_the_attempt_with_a_message(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    (tmp_path / "input").mkdir()
    if content is not None:
        (tmp_path / "input" / name).write_text(content)
    code, out, result = run_example(tmp_path, {**FAST, "trainFile": name})
    assert code == 2
    assert message in out
    assert result is None


def test_read_labelled_csv_with_and_without_a_header(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text("0.5,1,2\n\n1.5,-2,0\n")
    assert read_labelled(plain) == ([[0.5, 1.0], [1.5, -2.0]], [2, 0])
    headed = tmp_path / "headed.csv"
    headed.write_text("label,a,b\n1,0.5,0.25\n0,3,4\n")
    assert read_labelled(headed) == ([[0.5, 0.25], [3.0, 4.0]], [1, 0])


def test_read_labelled_refuses_what_is_not_a_dataset(tmp_path: Path) -> None:
    cases = {
        "empty.csv": ("", "no examples"),
        "one.csv": ("3\n", "at least one feature and a label"),
        "neg.csv": ("1,-1\n", "is not a class index"),
        "inf.csv": ("inf,1\n", "not a finite number"),
        "bool.jsonl": ('{"features": [true], "label": 0}\n', "True is not a number"),
        "shape.jsonl": ('{"x": [1], "y": 0}\n', "expected {"),
        "nojson.jsonl": ("{\n", "not JSON"),
        "nolist.jsonl": ('{"features": [], "label": 0}\n', "non-empty list"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(ValueError, match=message.replace("{", r"\{")):
            read_labelled(path)
