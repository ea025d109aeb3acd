"""`longrun.data`: reads a labelled training file, the format the finetune examples take.

A job gets uploaded files in `LONGRUN_INPUT_DIR` (see `longrun.job.input_path`); this reads
one of features and labels, with the standard library only, so both examples (numpy and
PyTorch) share one reader:

- `.csv`: one example a row, numbers separated by commas. The label is the column headed
  `label` when the first row is a header (a row that is not all numbers), else the last
  column; every other column is a feature.
- `.jsonl` (or `.ndjson`): one JSON object a line, `{"features": [x1, x2, ...], "label": k}`.

Labels are class indexes 0, 1, 2, ...; every example has the same number of features.
A file that breaks a rule raises ValueError naming the line.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Dict, List, Tuple, Union, cast

Labelled = Tuple[List[List[float]], List[int]]


def read_labelled(path: Union[str, "os.PathLike[str]"]) -> Labelled:
    """(features, labels) of a `.csv` or `.jsonl` file of labelled examples."""
    name = os.fspath(path)
    suffix = os.path.splitext(name)[1].lower()
    with open(name, encoding="utf-8", newline="") as f:
        if suffix == ".csv":
            rows = _read_csv(f)
        elif suffix in (".jsonl", ".ndjson"):
            rows = _read_jsonl(f)
        else:
            raise ValueError(f"{os.path.basename(name)}: expected a .csv or .jsonl file")
    if not rows:
        raise ValueError(f"{os.path.basename(name)}: no examples")
    width = len(rows[0][1])
    for line, features, _ in rows:
        if len(features) != width:
            raise ValueError(f"line {line}: {len(features)} features where line 1 has {width}")
    return [features for _, features, _ in rows], [label for _, _, label in rows]


_Row = Tuple[int, List[float], int]


def _read_csv(f: Any) -> List[_Row]:
    rows: List[_Row] = []
    label_column = -1
    for index, cells in enumerate(csv.reader(f)):
        line = index + 1
        if not cells or all(not c.strip() for c in cells):
            continue
        if index == 0 and not all(_is_number(c) for c in cells):
            names = [c.strip().lower() for c in cells]
            label_column = names.index("label") if "label" in names else -1
            continue
        values = [_number(c, line) for c in cells]
        if len(values) < 2:
            raise ValueError(f"line {line}: needs at least one feature and a label")
        label = values.pop(label_column)
        rows.append((line, values, _label(label, line)))
    return rows


def _read_jsonl(f: Any) -> List[_Row]:
    rows: List[_Row] = []
    for index, text in enumerate(f):
        line = index + 1
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError as e:
            raise ValueError(f"line {line}: not JSON ({e})") from None
        if not isinstance(record, dict) or "features" not in record or "label" not in record:
            raise ValueError(f'line {line}: expected {{"features": [...], "label": k}}')
        example = cast(Dict[str, Any], record)
        features = example["features"]
        if not isinstance(features, list) or not features:
            raise ValueError(f"line {line}: features must be a non-empty list of numbers")
        values = [_number(v, line) for v in cast(List[Any], features)]
        rows.append((line, values, _label(example["label"], line)))
    return rows


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _number(value: Any, line: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"line {line}: {value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"line {line}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"line {line}: {value!r} is not a finite number")
    return number


def _label(value: Any, line: int) -> int:
    number = _number(value, line)
    if number < 0 or number != int(number):
        raise ValueError(f"line {line}: the label {value!r} is not a class index (0, 1, 2, ...)")
    return int(number)
