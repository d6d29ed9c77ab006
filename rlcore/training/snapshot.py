"""Reading frozen data snapshots for training, with errors that name the file and line to fix.

A snapshot is JSONL (one object per line) or Parquet (one row per record). Preference rows carry
``chosen`` and ``rejected`` — plain text, or conversational message lists ``[{"role", "content"}]`` —
an optional ``prompt`` of the same kind, an optional ``margin`` (label strength) and an optional ``tie``
(true: neither side is better; trained with the Bradley-Terry tie target 1/2). Prompt rows carry
``prompt`` plus whatever columns the reward uses. Other columns (provenance) pass through untouched
until ``preference_rows`` keeps only what the trainer needs; ``comparison_id`` is kept aside to hold
out whole comparisons (``held_out_groups``).

>>> check_preference_row({"prompt": "Hi", "chosen": " hello", "rejected": " go away", "margin": 1}, "p.jsonl:3")
{'prompt': 'Hi', 'chosen': ' hello', 'rejected': ' go away', 'margin': 1.0}
>>> check_preference_row({"chosen": "a"}, "p.jsonl:4")
Traceback (most recent call last):
...
rlcore.errors.UserError: p.jsonl:4: missing column 'rejected' (a preference row needs chosen and rejected)
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
    if row.get("tie") is not None:
        if not isinstance(row["tie"], bool):
            raise UserError(f"{where}: column 'tie' must be true or false, got {row['tie']!r}")
        if row["tie"]:
            clean["tie"] = True
    return clean


@dataclass
class PreferenceSnapshot:
    """Checked trainer rows of a snapshot, and each row's ``comparison_id`` (None where the file has none)."""

    rows: list[dict[str, Any]]
    comparison_ids: list[str | None]


def read_preferences(path: str | Path, use_margin: bool) -> PreferenceSnapshot:
    """Checked preference rows of a snapshot; with ``use_margin`` every row must carry a margin.

    When any row is a tie every row gets ``tie`` (False for the others), so the columns stay uniform.
    """
    rows, comparison_ids = [], []
    records = read_records(path)
    for where, row in records:
        clean = check_preference_row(row, where)
        if use_margin and "margin" not in clean:
            raise UserError(f"{where}: use_margin is set but this row has no 'margin'; add margins to every row "
                            "or set use_margin to false")
        if not use_margin:
            clean.pop("margin", None)
        elif clean.get("tie"):
            clean["margin"] = 0.0  # a tie has no strength: its target is 1/2 whatever the column says
        rows.append(clean)
        comparison = row.get("comparison_id")
        comparison_ids.append(None if comparison in (None, "") else str(comparison))
    if any(r.get("tie") for r in rows):
        for r in rows:
            r.setdefault("tie", False)
    shapes = {tuple(sorted(r)) for r in rows}
    if len(shapes) > 1:
        raise UserError(f"{path}: rows mix columns {sorted(shapes)}; give every row the same columns "
                        "(a prompt on all rows or on none)")
    return PreferenceSnapshot(rows, comparison_ids)


def preference_rows(path: str | Path, use_margin: bool) -> list[dict[str, Any]]:
    """Checked preference rows of a snapshot (``read_preferences`` without the comparison ids)."""
    return read_preferences(path, use_margin).rows


SplitBy = Literal["comparison", "prompt"]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def held_out_groups(snapshot: PreferenceSnapshot, by: SplitBy) -> tuple[list[str], str]:
    """A group key per row (rows of one group are held out together) and a note on any fallback.

    ``comparison``: the row's ``comparison_id`` — all pairs of one ranking, both rows of a split tie and
    every annotator's label of one comparison share it. A row without one (a user's own file) is grouped
    by its prompt and the unordered pair of responses, which catches the same repeats of one pair.
    ``prompt``: the prompt text (every comparison of one prompt held out together), which measures
    generalisation to new prompts; without a prompt column this falls back to ``comparison``.

    >>> snap = PreferenceSnapshot([{"prompt": "p", "chosen": "x", "rejected": "y"},
    ...                            {"prompt": "p", "chosen": "y", "rejected": "x"}], [None, None])
    >>> keys, note = held_out_groups(snap, "comparison")
    >>> keys[0] == keys[1], note
    (True, '2 of 2 rows have no comparison_id: those are grouped by prompt and the unordered pair of responses')
    """
    rows = snapshot.rows
    if by == "prompt":
        if rows and all("prompt" in r for r in rows):
            return [f"prompt:{_text(r['prompt'])}" for r in rows], ""
        keys, note = held_out_groups(snapshot, "comparison")
        return keys, "; ".join(filter(None, ["the rows have no prompt column: split by comparison instead", note]))
    keys, missing = [], 0
    for row, comparison in zip(rows, snapshot.comparison_ids):
        if comparison is not None:
            keys.append(f"comparison:{comparison}")
            continue
        missing += 1
        pair = sorted([_text(row["chosen"]), _text(row["rejected"])])
        keys.append("pair:" + json.dumps([_text(row.get("prompt", "")), *pair]))
    note = (f"{missing} of {len(rows)} rows have no comparison_id: those are grouped by prompt and the "
            "unordered pair of responses") if missing else ""
    return keys, note


def split_held_out(rows: list[dict[str, Any]], eval_fraction: float, seed: int, source: str = "snapshot",
                   groups: list[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Shuffle whole groups with ``seed`` and hold out about ``eval_fraction`` of the pairs; too few is a UserError.

    ``groups[i]`` is row ``i``'s group (``held_out_groups``); the rows of a group land on one side only,
    so the same comparison is never both trained on and scored. Without groups each row is its own.

    >>> train, held_out = split_held_out([{"i": i} for i in range(20)], 0.1, seed=0)
    >>> len(train), len(held_out)
    (18, 2)
    >>> train, held_out = split_held_out([{"i": i} for i in range(20)], 0.1, seed=0, groups=[i // 4 for i in range(20)])
    >>> len(train), len(held_out), {r["i"] // 4 for r in held_out} & {r["i"] // 4 for r in train}
    (16, 4, set())
    >>> split_held_out([{"i": i} for i in range(6)], 0.1, seed=0, source="labels.jsonl")
    Traceback (most recent call last):
    ...
    rlcore.errors.UserError: labels.jsonl: only 6 preference pairs; a reward model needs at least 10 (8 to train, 2 held out) — label more comparisons
    """
    needed = MIN_TRAIN_PAIRS + MIN_EVAL_PAIRS
    if len(rows) < needed:
        raise UserError(f"{source}: only {len(rows)} preference pairs; a reward model needs at least {needed} "
                        f"({MIN_TRAIN_PAIRS} to train, {MIN_EVAL_PAIRS} held out) — label more comparisons")
    groups = list(range(len(rows))) if groups is None else groups
    members: dict[Any, list[int]] = {}
    for index, key in enumerate(groups):
        members.setdefault(key, []).append(index)
    order = list(members)
    random.Random(seed).shuffle(order)
    n_eval = max(MIN_EVAL_PAIRS, round(len(rows) * eval_fraction))
    held: set[int] = set()
    for key in order:
        if len(held) >= n_eval:
            break
        held.update(members[key])
    if len(rows) - len(held) < MIN_TRAIN_PAIRS:
        raise UserError(f"{source}: holding out {len(held)} of {len(rows)} pairs (whole groups of {len(members)}) "
                        f"leaves fewer than {MIN_TRAIN_PAIRS} to train on; lower eval_fraction, split by comparison "
                        "instead of prompt, or label more comparisons")
    return ([r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held])


def prompt_rows(path: str | Path) -> list[dict[str, Any]]:
    """Checked prompt rows of a snapshot: each has a text or message-list ``prompt``; other columns are kept.

    Rows need not share columns (an ``answer`` only on math rows is normal): a column a row lacks is None
    there, which is what a reward function sees and may answer with None ("does not apply"). A column whose
    values mix kinds (numbers on some rows, text on others) is passed as text, since a dataset column has
    one type.

    >>> import tempfile; path = Path(tempfile.mkdtemp()) / "p.jsonl"
    >>> _ = path.write_text('{"prompt": "2+2?", "answer": 4}\\n{"prompt": "x/2?", "answer": "x/2"}\\n{"prompt": "Hi"}\\n')
    >>> [row["answer"] for row in prompt_rows(path)]
    ['4', 'x/2', None]
    """
    rows = []
    for where, row in read_records(path):
        if row.get("prompt") is None:
            raise UserError(f"{where}: missing column 'prompt'")
        rows.append({**row, "prompt": _check_turns(row["prompt"], "prompt", where)})
    if not rows:
        raise UserError(f"{path}: the prompt snapshot is empty")
    columns = list(dict.fromkeys(column for row in rows for column in row))
    rows = [{column: row.get(column) for column in columns} for row in rows]
    for column in columns:
        if column != "prompt" and len({_value_kind(row[column]) for row in rows} - {None}) > 1:
            for row in rows:
                if row[column] is not None:
                    row[column] = _as_text(row[column])
    return rows


def _value_kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _as_text(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
