"""What the analyses read: one score table per reward source, and labelled pairs.

A *score table* holds one score per (prompt id, response id) for one source (a rubric version, a
reward spec, a reward model or ensemble member, an LM judge). Its JSONL file has one row per
response: ``{"prompt_id": "p1", "response_id": "r1", "score": 0.7}``.

A *labelled pair* is a human (or LM) preference between two responses to one prompt. Its JSONL rows
are either id rows (``prompt_id``, ``chosen_id``, ``rejected_id``, optional ``tie``, ``annotator``,
``label_id``, ``comparison_id``) or the rows ``rlcore.datasets.trl_export`` writes (``prompt``,
``chosen``, ``rejected``, ...): then the texts themselves are the ids, so score the same texts.

>>> a = ScoreTable.from_rows("rm", [("p1", "r1", 1.0), ("p1", "r2", 0.0)])
>>> b = ScoreTable.from_rows("judge", [("p1", "r1", 3.0)])
>>> align_sources([a, b])
Traceback (most recent call last):
...
rlcore.errors.UserError: source 'judge' has no score for 1 of the 2 responses the sources scored (first: prompt 'p1', response 'r2'); score the same response set with every source
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from rlcore.errors import UserError
from rlcore.jsonl import read_jsonl_objects


@dataclass(frozen=True)
class ScoreTable:
    """One source's scores: ``scores[(prompt_id, response_id)] = score``."""

    name: str
    scores: dict[tuple[str, str], float]

    @classmethod
    def from_rows(cls, name: str, rows: Iterable[tuple[str, str, float]]) -> ScoreTable:
        table: dict[tuple[str, str], float] = {}
        for prompt_id, response_id, score in rows:
            key = (str(prompt_id), str(response_id))
            if key in table:
                raise UserError(f"source {name!r}: prompt {key[0]!r}, response {key[1]!r} is scored twice")
            if not math.isfinite(float(score)):
                raise UserError(f"source {name!r}: prompt {key[0]!r}, response {key[1]!r}: score {score!r} is not finite")
            table[key] = float(score)
        return cls(name=name, scores=table)

    @classmethod
    def read_jsonl(cls, path: str | Path, name: str | None = None) -> ScoreTable:
        """Read ``{"prompt_id", "response_id", "score"}`` rows; a bad row names the file, line and field."""
        path = Path(path)
        name = name or path.stem
        table: dict[tuple[str, str], float] = {}
        for line, row in read_jsonl_objects(path, "a JSON object with 'prompt_id', 'response_id' and 'score'"):
            for field in ("prompt_id", "response_id", "score"):
                if field not in row:
                    raise UserError(f"{path}:{line}: field '{field}' is missing")
            score = row["score"]
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise UserError(f"{path}:{line}: field 'score': expected a finite number, got {score!r}")
            key = (str(row["prompt_id"]), str(row["response_id"]))
            if key in table:
                raise UserError(f"{path}:{line}: prompt {key[0]!r}, response {key[1]!r} is scored twice")
            table[key] = float(score)
        if not table:
            raise UserError(f"{path}: no scores in the file")
        return cls(name=name, scores=table)


@dataclass(frozen=True)
class AlignedScores:
    """K sources on one shared response set: ``values[k, i]`` is source k's score of response ``keys[i]``.

    Responses are sorted by prompt, so ``prompt_index`` is non-decreasing and ``prompt_starts`` marks
    where each prompt's block begins (the last entry is the number of responses).
    """

    sources: list[str]
    keys: list[tuple[str, str]]
    prompts: list[str]
    prompt_index: np.ndarray  # (N,) int
    prompt_starts: np.ndarray  # (P + 1,) int
    values: np.ndarray  # (K, N) float


def align_sources(tables: Sequence[ScoreTable]) -> AlignedScores:
    """Put the sources on one response set; refuse (naming the source and what it lacks) when they differ."""
    if not tables:
        raise UserError("no reward sources given: pass at least one score table")
    names = [t.name for t in tables]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"source name {duplicates[0]!r} is given twice; name each source once")
    union: set[tuple[str, str]] = set()
    for table in tables:
        union.update(table.scores)
    keys = sorted(union)
    for table in tables:
        if len(table.scores) != len(union):
            missing = [k for k in keys if k not in table.scores]
            raise UserError(
                f"source {table.name!r} has no score for {len(missing)} of the {len(union)} responses the sources "
                f"scored (first: prompt {missing[0][0]!r}, response {missing[0][1]!r}); score the same response set "
                "with every source")
    prompts: list[str] = []
    prompt_index = np.empty(len(keys), dtype=np.int64)
    for i, (prompt_id, _) in enumerate(keys):
        if not prompts or prompts[-1] != prompt_id:
            prompts.append(prompt_id)
        prompt_index[i] = len(prompts) - 1
    starts = np.searchsorted(prompt_index, np.arange(len(prompts) + 1))
    values = np.array([[t.scores[k] for k in keys] for t in tables], dtype=np.float64)
    return AlignedScores(sources=names, keys=keys, prompts=prompts, prompt_index=prompt_index,
                         prompt_starts=starts, values=values)


class LabelledPair(BaseModel):
    """One labelled preference: ``chosen_id`` was preferred to ``rejected_id`` for ``prompt_id`` (or a tie)."""

    prompt_id: str
    chosen_id: str
    rejected_id: str
    tie: bool = Field(False, description="the label said neither response is better")
    annotator: str = ""
    label_id: str = ""
    comparison_id: str = ""
    chosen_length: int | None = Field(None, description="characters of the chosen response, when known")
    rejected_length: int | None = None
    attributes: dict[str, Any] = Field(default_factory=dict,
                                       description="everything else on the row (category, routing features, ...)")


_ID_FIELDS = {"prompt_id": "prompt", "chosen_id": "chosen", "rejected_id": "rejected"}
_KNOWN = {"prompt_id", "chosen_id", "rejected_id", "prompt", "chosen", "rejected", "tie", "annotator", "label_id",
          "comparison_id", "chosen_length", "rejected_length"}


def _as_id(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def read_labelled_pairs(path: str | Path) -> list[LabelledPair]:
    """Labelled pairs from id rows or from ``rlcore`` export rows (texts as ids); JSON-string columns
    of the export (``provenance``, ``criterion_scores``) are opened so their keys can name a group."""
    path = Path(path)
    pairs = []
    seen_split: set[tuple[str, str]] = set()
    for line, row in read_jsonl_objects(path, "a JSON object for one labelled pair"):
        ids: dict[str, Any] = {}
        for field, text_field in _ID_FIELDS.items():
            if field in row:
                ids[field] = str(row[field])
            elif text_field in row:
                ids[field] = _as_id(row[text_field])
                if text_field != "prompt" and isinstance(row[text_field], str):
                    ids[f"{text_field}_length"] = len(row[text_field])
            else:
                raise UserError(f"{path}:{line}: field '{field}' (or '{text_field}') is missing")
        for field in ("chosen_length", "rejected_length"):
            if field in row:
                if isinstance(row[field], bool) or not isinstance(row[field], int) or row[field] < 0:
                    raise UserError(f"{path}:{line}: field '{field}': expected a count of characters, got {row[field]!r}")
                ids[field] = row[field]
        tie = bool(row.get("tie", False))
        label_id = str(row.get("label_id", "") or "")
        if tie and label_id:
            # tie policy 'split' writes a tie in both orders: one labelled pair, not two
            key = (label_id, "tie")
            if key in seen_split:
                continue
            seen_split.add(key)
        attributes = {}
        for key, value in row.items():
            if key in _KNOWN:
                continue
            if key in ("provenance", "criterion_scores") and isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            attributes[key] = value
        pairs.append(LabelledPair(**ids, tie=tie, annotator=str(row.get("annotator", "") or ""), label_id=label_id,
                                  comparison_id=str(row.get("comparison_id", "") or ""), attributes=attributes))
    if not pairs:
        raise UserError(f"{path}: no labelled pairs in the file")
    return pairs


def read_score_sources(specs: Sequence[str]) -> list[ScoreTable]:
    """Score tables from ``NAME=PATH`` or ``PATH`` arguments (the name is then the file's stem)."""
    tables = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        tables.append(ScoreTable.read_jsonl(path, name) if sep else ScoreTable.read_jsonl(spec))
    return tables


def read_rater_labels(path: str | Path) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    """``(item id, rater, label)`` per label from rows with ``item_id``/``comparison_id``,
    ``rater``/``annotator`` (an LM label without annotator is rated as its ``model_version``) and
    ``label``/``choice`` in a/b/tie; export rows of rankings are skipped and counted, and a tie
    exported in both orders (tie policy 'split') is read once. Returns the labels and the skips."""
    path = Path(path)
    out: list[tuple[str, str, str]] = []
    skipped: dict[str, int] = {}
    seen: set[str] = set()
    for line, row in read_jsonl_objects(path, "a JSON object for one label"):
        item = row.get("item_id", row.get("comparison_id"))
        rater = row.get("rater") or row.get("annotator") or row.get("model_version")
        label = row.get("label", row.get("choice"))
        if item in (None, ""):
            raise UserError(f"{path}:{line}: field 'item_id' (or 'comparison_id') is missing")
        if not rater:
            raise UserError(f"{path}:{line}: field 'rater' (or 'annotator') is missing")
        if label == "ranking":
            skipped["ranking (not a/b/tie)"] = skipped.get("ranking (not a/b/tie)", 0) + 1
            continue
        if label not in ("a", "b", "tie"):
            raise UserError(f"{path}:{line}: field 'label' (or 'choice'): expected a, b or tie, got {label!r}")
        label_id = str(row.get("label_id", "") or "")
        if label_id:
            if label_id in seen:
                skipped["second row of one label (tie policy 'split')"] = skipped.get(
                    "second row of one label (tie policy 'split')", 0) + 1
                continue
            seen.add(label_id)
        out.append((str(item), str(rater), label))
    if not out:
        raise UserError(f"{path}: no a/b/tie labels in the file")
    return out, skipped


def read_gold(path: str | Path) -> dict[str, str]:
    """Gold answers: rows ``{"item_id" (or "comparison_id"): ..., "answer": "a" | "b"}``."""
    path = Path(path)
    gold: dict[str, str] = {}
    for line, row in read_jsonl_objects(path, "a JSON object with 'item_id' and 'answer'"):
        item = row.get("item_id", row.get("comparison_id"))
        if item in (None, ""):
            raise UserError(f"{path}:{line}: field 'item_id' (or 'comparison_id') is missing")
        if "answer" not in row:
            raise UserError(f"{path}:{line}: field 'answer' is missing")
        if row["answer"] == "tie":
            raise UserError(f"{path}:{line}: gold item {item!r} has answer 'tie': a tie gold item cannot tell a careful "
                            "rater from one who says tie when unsure; give it answer 'a' or 'b', or leave it out")
        if row["answer"] not in ("a", "b"):
            raise UserError(f"{path}:{line}: field 'answer': expected 'a' or 'b', got {row['answer']!r}")
        gold[str(item)] = row["answer"]
    if not gold:
        raise UserError(f"{path}: no gold items in the file")
    return gold
