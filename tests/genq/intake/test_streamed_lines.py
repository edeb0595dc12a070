"""A file read in chunks (a stored file's parts) reads exactly as the whole file would."""

from __future__ import annotations

import json
import random

import pytest

from genq.intake.lines import BOM, FirstLines, LineReader, numbered_lines, read_file
from genq.settings import Settings

SETTINGS = Settings()


def cut(data: bytes, rng: random.Random) -> list[bytes]:
    points = sorted(rng.sample(range(len(data) + 1), k=min(len(data) + 1, rng.randint(0, 6))))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def test_lines_split_anywhere_number_as_splitlines_does() -> None:
    rng = random.Random(7)
    # Every way a line end, a CRLF or the byte order mark can fall across a chunk's edge.
    alphabet = [b"a", b"b", b"\r", b"\n", b" ", *(BOM[i : i + 1] for i in range(3))]
    for _ in range(3000):
        data = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        if rng.random() < 0.3:
            data = BOM + data
        expected = list(enumerate(data.removeprefix(BOM).splitlines(), start=1))
        assert list(numbered_lines(cut(data, rng))) == expected, data


def test_first_lines_match_a_plain_dict_across_chunks() -> None:
    rng = random.Random(3)
    for _ in range(200):
        firsts, plain = FirstLines(), {}
        number = 0
        for _chunk in range(rng.randint(1, 6)):
            ids = [str(rng.randint(0, 25)) for _ in range(rng.randint(0, 20))]
            numbers = list(range(number + 1, number + 1 + len(ids)))
            number += len(ids)
            expected = [plain.setdefault(i, n) for i, n in zip(ids, numbers, strict=True)]
            assert firsts.of(ids, numbers) == expected


@pytest.mark.parametrize("chunk_lines", [1, 2, 5, 1000])
def test_a_file_in_small_parts_reads_as_the_whole(
    chunk_lines: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [
        {"custom_id": "a", "prompt": "x"},
        {"custom_id": "b", "prompt": "y", "params": {"max_new_tokens": 3}},
        {"custom_id": "a", "prompt": "again"},  # a duplicate of line 1
        "{not json",
        {"custom_id": "c", "prompt": "z"},
        {"custom_id": "b", "prompt": "and again"},  # of line 2, across chunks when small
    ]
    content = ("\r\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)).encode()
    whole = read_file(content, settings=SETTINGS)
    monkeypatch.setattr(LineReader, "CHUNK_LINES", chunk_lines)
    reader = LineReader(settings=SETTINGS)
    parts = [content[i : i + 7] for i in range(0, len(content), 7)]
    streamed = list(reader.lines(parts))
    assert [(x.number, x.custom_id, x.request, str(x.error)) for x in streamed] == [
        (x.number, x.custom_id, x.request, str(x.error)) for x in whole.lines
    ]
    assert [x.error_text.split(":")[:2] for x in streamed if x.error] == [
        ["line 3", " custom_id"],
        ["line 4", " malformed JSON"],
        ["line 6", " custom_id"],
    ]
    assert reader.count == 6


def test_a_stream_with_more_lines_than_a_job_takes_raises_as_it_reads() -> None:
    reader = LineReader(settings=SETTINGS, max_lines=3)
    content = b'{"prompt": "a"}\n' * 4
    with pytest.raises(Exception, match="at most 3 lines per job"):
        list(reader.lines([content]))
