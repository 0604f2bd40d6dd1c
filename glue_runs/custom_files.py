"""Read a user's own data file (CSV, JSON lines, or a JSON array of objects) into rows, refusing what is malformed.

`datasets.load_dataset("csv"/"json")` meets a malformed file deep inside pyarrow (a `DatasetGenerationError` about
casting or an unexpected column, for one bad row out of thousands). These files are small enough to read with the
standard library instead, so every problem gets one sentence naming the file, the line and the fix.
"""

from __future__ import annotations

import csv
import io
import json
import os

__all__ = ["DataError", "read_rows"]

EXTENSIONS = (".csv", ".json", ".jsonl")


class DataError(ValueError):
    """Bad input data; the message names the file, the problem and the fix."""


Row = tuple[str, dict]  # (where it is in the file: "line 3" / "item 3", the row as a dict)


def read_rows(path: str, flag: str) -> tuple[list[Row], list[str]]:
    """The rows of ``path``, each with its location in the file, and its columns.

    Args:
        path: a ``.csv`` (a header line, then one row per line), ``.jsonl`` (one JSON object per line) or ``.json``
            (JSON lines, or one array of objects) file.
        flag: how the user named the file (``--train_file``), for the messages.
    Returns:
        ``(rows, columns)``: ``rows`` a list of ``(location, row)``, location ``"line 3"`` or ``"item 3"``.
    Raises:
        DataError: a missing or empty file, another extension, a row with more or fewer fields than the header,
            invalid JSON, an entry that is not an object, or objects whose keys differ from the first one's.
    """
    where = f"{flag} {path}"
    if not os.path.isfile(path):
        raise DataError(f"{where} does not exist: check the path (relative paths start from the working directory).")
    if not path.endswith(EXTENSIONS):
        raise DataError(f"{where}: use a .csv, .json or .jsonl file (CSV with a header line, or JSON objects).")
    with open(path, encoding="utf-8-sig", newline="") as f:
        text = f.read()
    if not text.strip():
        raise DataError(f"{where} is empty: it needs {_wants(path)}.")
    rows, columns = _csv_rows(text, where) if path.endswith(".csv") else _json_rows(text, where)
    if not rows:
        raise DataError(f"{where} has a header but no rows: it needs {_wants(path)}.")
    return rows, columns


def _wants(path: str) -> str:
    return "a header line and one row per example" if path.endswith(".csv") else "one JSON object per example"


def _csv_rows(text: str, where: str) -> tuple[list[Row], list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    columns = next(reader)
    rows = []
    for values in reader:
        if not values:  # a blank line
            continue
        if len(values) != len(columns):
            raise DataError(
                f"{where}, line {reader.line_num}: {len(values)} comma-separated fields where the header has "
                f"{len(columns)} ({', '.join(columns)}). Quote fields that contain commas, or fix the row."
            )
        rows.append((f"line {reader.line_num}", dict(zip(columns, values))))
    return rows, columns


def _json_rows(text: str, where: str) -> tuple[list[Row], list[str]]:
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}).") from None
        entries = [(f"item {n}", item) for n, item in enumerate(items, start=1)]
    else:
        entries = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{where}, line {n}: not valid JSON ({e.msg}, column {e.colno}). Write one JSON object per line."
                ) from None
    rows, columns = [], None
    for at, item in entries:
        if not isinstance(item, dict):
            raise DataError(f'{where}, {at}: expected a JSON object like {{"sentence": ..., "label": ...}}.')
        if columns is None:
            columns = list(item)
        elif set(item) != set(columns):
            missing, extra = sorted(set(columns) - set(item)), sorted(set(item) - set(columns))
            raise DataError(
                f"{where}, {at}: its keys differ from the first object's ({', '.join(columns)}): "
                f"missing {missing}, extra {extra}. Give every object the same keys."
            )
        rows.append((at, item))
    return rows, columns or []
