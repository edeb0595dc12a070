"""CSV and Parquet input: each row becomes one native JSONL line, read from there on exactly as
a JSONL file is (so a bad row fails alone, with its row number as its line). Columns: ``prompt``
or ``messages`` (a list, or its JSON text), and optionally ``custom_id`` and ``params`` (an
object, or its JSON text); an empty cell is no value. Parquet needs pyarrow (``pip install
genq[parquet]``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from genq.errors import InvalidRequest

TABULAR = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
JSON_COLUMNS = ("messages", "params")


def is_tabular(path: Path) -> bool:
    return path.suffix.lower() in TABULAR


def _line(row: Mapping[str, Any]) -> bytes:
    out: dict[str, Any] = {}
    for name, value in row.items():
        if value is None or value == "":
            continue
        if name in JSON_COLUMNS and isinstance(value, str):
            # Text that is not JSON stays text: the line fails with what the field must be.
            with suppress(ValueError):
                value = json.loads(value)
        out[str(name)] = value
    return json.dumps(out, ensure_ascii=False).encode() + b"\n"


def _csv_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        yield from csv.DictReader(handle)


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidRequest(
            "input", "reading Parquet needs pyarrow: pip install 'genq[parquet]'"
        ) from None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
        yield from batch.to_pylist()


def table_jsonl(path: Path) -> bytes:
    """The rows of the CSV or Parquet file ``path`` as native JSONL."""
    rows = _csv_rows(path) if TABULAR[path.suffix.lower()] == "csv" else _parquet_rows(path)
    out = io.BytesIO()
    for row in rows:
        out.write(_line(row))
    return out.getvalue()


def input_bytes(path: Path) -> bytes:
    """``path``'s content as JSONL: a CSV or Parquet file converted, any other read as it is."""
    return table_jsonl(path) if is_tabular(path) else path.read_bytes()
