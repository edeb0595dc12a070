"""CSV and Parquet rows read as the JSONL lines they make: the same requests as the JSONL
file of those lines, a bad row failing alone with its row number."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from genq.intake import read_file
from genq.intake.tabular import input_bytes, is_tabular
from genq.settings import Settings

SETTINGS = Settings(database_url="sqlite://")
CHAT = [{"role": "user", "content": "Name a colour."}]
ROWS = [
    {"custom_id": "a", "prompt": "Once upon a time", "params": {"max_new_tokens": 5}},
    {"custom_id": "b", "messages": CHAT},
    {"prompt": "line, with a comma\nand a newline"},
    {"custom_id": "bad", "prompt": "x", "params": {"max_new_tokens": -1}},
]


def jsonl() -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in ROWS)


def requests(content: bytes) -> list[tuple[int, str, object, str | None]]:
    read = read_file(content, settings=SETTINGS)
    return [
        (
            line.number,
            line.custom_id,
            line.request and (line.request.prompt, line.request.messages, line.request.params),
            line.error and line.error.field,
        )
        for line in read.lines
    ]


def test_a_csv_reads_as_its_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as handle:  # with a byte order mark
        writer = csv.DictWriter(handle, fieldnames=["custom_id", "prompt", "messages", "params"])
        writer.writeheader()
        for row in ROWS:
            writer.writerow(
                {
                    **row,
                    "messages": json.dumps(row["messages"]) if "messages" in row else "",
                    "params": json.dumps(row["params"]) if "params" in row else "",
                }
            )
    assert is_tabular(path) and not is_tabular(tmp_path / "in.jsonl")
    got = requests(input_bytes(path))
    assert got == requests(jsonl())
    assert [n for n, *_ in got] == [1, 2, 3, 4] and got[3][3] == "params.max_new_tokens"
    assert got[2][1] == "line-3" and got[2][2][0] == "line, with a comma\nand a newline"


def test_a_parquet_file_reads_as_its_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    table = pa.Table.from_pylist(
        [
            {
                "custom_id": r.get("custom_id"),
                "prompt": r.get("prompt"),
                "messages": json.dumps(r["messages"]) if "messages" in r else None,
                "params": json.dumps(r["params"]) if "params" in r else None,
            }
            for r in ROWS
        ]
    )
    pq.write_table(table, path)
    assert requests(input_bytes(path)) == requests(jsonl())


def test_a_csv_without_the_columns_fails_each_row(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("question,answer\nwhat,that\n")
    (line,) = read_file(input_bytes(path), settings=SETTINGS).lines
    assert line.request is None and line.error is not None
