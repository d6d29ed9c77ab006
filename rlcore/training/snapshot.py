"""Reading frozen data snapshots for training, with errors that name the file and line to fix.

A snapshot is JSONL (one object per line) or Parquet (one row per record). Preference rows carry
``chosen`` and ``rejected`` — plain text, or conversational message lists ``[{"role", "content"}]`` —
an optional ``prompt`` of the same kind, and an optional ``margin`` (label strength). Prompt rows carry
``prompt`` plus whatever columns the reward uses. Other columns (provenance) pass through untouched
until ``preference_rows`` keeps only what the trainer needs.

>>> check_preference_row({"prompt": "Hi", "chosen": " hello", "rejected": " go away", "margin": 1}, "p.jsonl:3")
{'prompt': 'Hi', 'chosen': ' hello', 'rejected': ' go away', 'margin': 1.0}
>>> check_preference_row({"chosen": "a"}, "p.jsonl:4")
Traceback (most recent call last):
...
rlcore.errors.UserError: p.jsonl:4: missing column 'rejected' (a preference row needs chosen and rejected)
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from rlcore.errors import UserError
from rlcore.jsonl import read_jsonl_objects

MIN_TRAIN_PAIRS = 8
MIN_EVAL_PAIRS = 2


def read_records(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """``(where, row)`` for each record of a JSONL or Parquet file; ``where`` is ``file:line`` or ``file:row N``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: snapshot file not found")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise UserError(f"{path}: not a readable Parquet file: {exc}") from exc
        return [(f"{path}:row {i + 1}", row) for i, row in enumerate(rows)]
    return [(f"{path}:{number}", row) for number, row in read_jsonl_objects(path)]


def _check_turns(value: Any, column: str, where: str) -> str | list[dict[str, str]]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise UserError(f"{where}: column {column!r} must be text or a non-empty list of "
                    f"{{'role': ..., 'content': ...}} messages")


def check_preference_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    """The trainer's view of one preference row: prompt?, chosen, rejected, margin?; bad rows raise UserError."""
    for column in ("chosen", "rejected"):
        if row.get(column) is None:
            raise UserError(f"{where}: missing column {column!r} (a preference row needs chosen and rejected)")
    clean: dict[str, Any] = {}
    if row.get("prompt") is not None:
        clean["prompt"] = _check_turns(row["prompt"], "prompt", where)
    clean["chosen"] = _check_turns(row["chosen"], "chosen", where)
    clean["rejected"] = _check_turns(row["rejected"], "rejected", where)
    kinds = {type(v) for v in clean.values()}
    if len(kinds) > 1:
        raise UserError(f"{where}: prompt, chosen and rejected must all be text or all be message lists")
    if row.get("margin") is not None:
        margin = row["margin"]
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
            raise UserError(f"{where}: column 'margin' must be a finite number, got {margin!r}")
        clean["margin"] = float(margin)
    return clean


def preference_rows(path: str | Path, use_margin: bool) -> list[dict[str, Any]]:
    """Checked preference rows of a snapshot; with ``use_margin`` every row must carry a margin."""
    rows = []
    records = read_records(path)
    for where, row in records:
        clean = check_preference_row(row, where)
        if use_margin and "margin" not in clean:
            raise UserError(f"{where}: use_margin is set but this row has no 'margin'; add margins to every row "
                            "or set use_margin to false")
        if not use_margin:
            clean.pop("margin", None)
        rows.append(clean)
    shapes = {tuple(sorted(r)) for r in rows}
    if len(shapes) > 1:
        raise UserError(f"{path}: rows mix columns {sorted(shapes)}; give every row the same columns "
                        "(a prompt on all rows or on none)")
    return rows


def split_held_out(rows: list[dict[str, Any]], eval_fraction: float, seed: int,
                   source: str = "snapshot") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Shuffle with ``seed`` and hold out ``eval_fraction`` of the pairs; too few pairs is a UserError.

    >>> train, held_out = split_held_out([{"i": i} for i in range(20)], 0.1, seed=0)
    >>> len(train), len(held_out)
    (18, 2)
    >>> split_held_out([{"i": i} for i in range(6)], 0.1, seed=0, source="labels.jsonl")
    Traceback (most recent call last):
    ...
    rlcore.errors.UserError: labels.jsonl: only 6 preference pairs; a reward model needs at least 10 (8 to train, 2 held out) — label more comparisons
    """
    needed = MIN_TRAIN_PAIRS + MIN_EVAL_PAIRS
    if len(rows) < needed:
        raise UserError(f"{source}: only {len(rows)} preference pairs; a reward model needs at least {needed} "
                        f"({MIN_TRAIN_PAIRS} to train, {MIN_EVAL_PAIRS} held out) — label more comparisons")
    n_eval = max(MIN_EVAL_PAIRS, round(len(rows) * eval_fraction))
    if len(rows) - n_eval < MIN_TRAIN_PAIRS:
        raise UserError(f"{source}: holding out {n_eval} of {len(rows)} pairs leaves fewer than {MIN_TRAIN_PAIRS} "
                        "to train on; lower eval_fraction or label more comparisons")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return ([r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held])


def prompt_rows(path: str | Path) -> list[dict[str, Any]]:
    """Checked prompt rows of a snapshot: each has a text or message-list ``prompt``; other columns are kept."""
    rows = []
    for where, row in read_records(path):
        if row.get("prompt") is None:
            raise UserError(f"{where}: missing column 'prompt'")
        rows.append({**row, "prompt": _check_turns(row["prompt"], "prompt", where)})
    if not rows:
        raise UserError(f"{path}: the prompt snapshot is empty")
    columns = {tuple(sorted(r)) for r in rows}
    if len(columns) > 1:
        raise UserError(f"{path}: rows have different columns {sorted(columns)}; give every row the same columns")
    return rows
