"""Reading JSON Lines files written by people: every problem names the file and the line.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "rows.jsonl"
>>> _ = path.write_text('{"prompt": "hi"}\\n\\n[1, 2]\\n')
>>> read_jsonl_objects(path)
Traceback (most recent call last):
...
rlcore.errors.UserError: ...rows.jsonl:3: expected a JSON object, got a list
>>> _ = path.write_text('{"prompt": "hi"}\\n\\n{"prompt": "yo"}\\n')
>>> [(line, row["prompt"]) for line, row in read_jsonl_objects(path)]
[(1, 'hi'), (3, 'yo')]
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlcore.errors import UserError


def read_jsonl_objects(path: str | Path, expected: str = "a JSON object") -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line; ``expected`` says what a line should hold."""
    return list(iter_jsonl_objects(path, expected))


def iter_jsonl_objects(path: str | Path, expected: str = "a JSON object") -> Iterator[tuple[int, dict[str, Any]]]:
    """:func:`read_jsonl_objects` one line at a time, for files too large to hold whole."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file ({exc.strerror})") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise UserError(f"{path}:{number}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{number}: expected {expected}, got a {type(row).__name__.replace('dict', 'object')}")
            yield number, row
