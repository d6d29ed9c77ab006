"""Labels out as TRL preference datasets: ``prompt``, ``chosen``, ``rejected``, ``margin``, plus
provenance columns, in JSONL or Parquet, plain text or conversational.

Every row carries ``tie`` (true when the label said neither response is better). Tie policies:
``drop`` leaves ties out; ``keep`` writes one row with ``tie: true`` and margin 0, which rlcore's
reward-model trainer scores with the Bradley-Terry tie loss (target 1/2:
``-1/2 log s(d) - 1/2 log s(-d)``), not as a win of position 0; ``split`` writes both orders, also
marked ``tie`` (trainers that ignore the column then see two opposite wins, which is the same loss
counted twice). A ranking becomes every implied pair (best over each below it), with margin =
distance in the ranking. For a/b choices the margin is the strength (1 slightly, 2 much better).

Pass an ``ExportSummary`` to ``preference_rows`` to learn how many labels went in, how many rows came
out, and which labels gave no row and why.

>>> lab = ExportLabel(label_id="7", comparison_id="3", prompt_text="2+2?", responses=[
...     ExportResponse(text="4"), ExportResponse(text="5")], choice="a", strength=2, source="human",
...     annotator="carol", display_order=[1, 0], labeled_at="2026-01-01T00:00:00Z")
>>> row = next(preference_rows([lab]))
>>> row["prompt"], row["chosen"], row["rejected"], row["margin"], row["display_order"]
('2+2?', '4', '5', 2.0, [1, 0])
>>> summary = ExportSummary()
>>> tie = lab.model_copy(update={"choice": "tie", "label_id": "8"})
>>> [r["tie"] for r in preference_rows([lab, tie], tie_policy="keep", summary=summary)]
[False, True]
>>> summary.labels_in, summary.rows_out, summary.tie_rows, summary.labels_dropped
(2, 2, 1, {})
>>> row = next(preference_rows([lab], conversational=True))
>>> row["prompt"], row["chosen"]
([{'role': 'user', 'content': '2+2?'}], [{'role': 'assistant', 'content': '4'}])
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from rlcore.errors import UserError

TiePolicy = Literal["drop", "split", "keep"]
TIE_POLICIES = ("drop", "split", "keep")
WRITE_BATCH_ROWS = 2000


class ExportResponse(BaseModel):
    text: str = Field(description="Plain text of the response.")
    messages: list[dict[str, str]] | None = Field(default=None, description="Chat form, if any.")


class ExportLabel(BaseModel):
    """One label with what it judged, in the comparison's canonical order."""

    label_id: str
    comparison_id: str
    prompt_text: str
    prompt_messages: list[dict[str, str]] | None = None
    responses: list[ExportResponse] = Field(description="Canonical order: position 0 is 'a'.")
    choice: Literal["a", "b", "tie", "ranking"]
    ranking: list[int] | None = Field(default=None, description="Positions best first (choice 'ranking').")
    strength: int = 1
    source: Literal["human", "lm"] = "human"
    annotator: str = ""
    annotator_id: int | None = None
    model_version: str = ""
    display_order: list[int] = Field(default_factory=list, description="Positions in the order shown.")
    labeled_at: str = ""
    rationale: str = ""
    criterion_scores: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)


DROPPED_TIE = "tie (tie policy 'drop')"
DROPPED_NO_ORDER = "ranking with fewer than two ranked responses"


class ExportSummary(BaseModel):
    """What an export rests on: labels read, rows written, and the labels that gave no row, by reason."""

    tie_policy: str = "drop"
    labels_in: int = 0
    labels_kept: int = 0
    labels_dropped: dict[str, int] = Field(default_factory=dict, description="Reason -> labels that gave no row.")
    rows_out: int = 0
    tie_rows: int = Field(0, description="Rows marked tie (policy keep or split).")

    def drop(self, reason: str) -> None:
        self.labels_dropped[reason] = self.labels_dropped.get(reason, 0) + 1


def _prompt(label: ExportLabel, conversational: bool):
    if not conversational:
        return label.prompt_text
    return label.prompt_messages or [{"role": "user", "content": label.prompt_text}]


def _completion(resp: ExportResponse, conversational: bool):
    if not conversational:
        return resp.text
    if resp.messages and all(m.get("role") == "assistant" for m in resp.messages):
        return resp.messages
    return [{"role": "assistant", "content": resp.text}]


def _pairs(label: ExportLabel, tie_policy: str) -> list[tuple[int, int, float]]:
    if label.choice == "a":
        return [(0, 1, float(label.strength))]
    if label.choice == "b":
        return [(1, 0, float(label.strength))]
    if label.choice == "tie":
        return {"drop": [], "keep": [(0, 1, 0.0)], "split": [(0, 1, 0.0), (1, 0, 0.0)]}[tie_policy]
    ranking = label.ranking or []
    return [(ranking[i], ranking[j], float(j - i)) for i in range(len(ranking)) for j in range(i + 1, len(ranking))]


def preference_rows(labels: Iterable[ExportLabel], *, tie_policy: TiePolicy = "drop",
                    conversational: bool = False, summary: ExportSummary | None = None) -> Iterator[dict[str, Any]]:
    """TRL preference rows (one or more per label), provenance columns included; ``summary`` is filled in."""
    if tie_policy not in TIE_POLICIES:
        raise UserError(f"tie policy {tie_policy!r}: choose one of {', '.join(TIE_POLICIES)}")
    summary = summary if summary is not None else ExportSummary()
    summary.tie_policy = tie_policy
    for label in labels:
        summary.labels_in += 1
        pairs = _pairs(label, tie_policy)
        if not pairs:
            summary.drop(DROPPED_TIE if label.choice == "tie" else DROPPED_NO_ORDER)
            continue
        summary.labels_kept += 1
        prompt = _prompt(label, conversational)
        tie = label.choice == "tie"
        for chosen, rejected, margin in pairs:
            summary.rows_out += 1
            summary.tie_rows += tie
            yield {
                "prompt": prompt,
                "chosen": _completion(label.responses[chosen], conversational),
                "rejected": _completion(label.responses[rejected], conversational),
                "margin": margin,
                "tie": tie,
                "label_id": label.label_id,
                "comparison_id": label.comparison_id,
                "chosen_position": chosen,
                "rejected_position": rejected,
                "choice": label.choice,
                "ranking": label.ranking,
                "strength": label.strength,
                "source": label.source,
                "annotator": label.annotator,
                "annotator_id": label.annotator_id,
                "model_version": label.model_version,
                "display_order": label.display_order,
                "labeled_at": label.labeled_at,
                "rationale": label.rationale,
                "criterion_scores": json.dumps(label.criterion_scores, sort_keys=True),
                "provenance": json.dumps(label.provenance, sort_keys=True),
            }


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike) -> int:
    """Write rows as JSON Lines; returns how many."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_parquet(rows: Iterable[dict[str, Any]], path: str | os.PathLike) -> int:
    """Write rows as Parquet, a batch at a time (constant memory); returns how many."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    n = 0
    batch: list[dict[str, Any]] = []

    def flush():
        nonlocal writer
        table = pa.Table.from_pylist(batch, schema=writer.schema if writer else None)
        if writer is None:
            writer = pq.ParquetWriter(str(path), table.schema)
        writer.write_table(table)
        batch.clear()

    try:
        for row in rows:
            batch.append(row)
            n += 1
            if len(batch) >= WRITE_BATCH_ROWS:
                flush()
        if batch:
            flush()
        if writer is None:  # no rows: still a valid, empty file with the plain-text columns
            pq.write_table(pa.table({c: pa.array([], pa.string()) for c in ("prompt", "chosen", "rejected")}),
                           str(path))
    finally:
        if writer is not None:
            writer.close()
    return n


def write_preferences(rows: Iterable[dict[str, Any]], path: str | os.PathLike, fmt: str) -> int:
    if fmt == "jsonl":
        return write_jsonl(rows, path)
    if fmt == "parquet":
        return write_parquet(rows, path)
    raise UserError(f"export format {fmt!r}: choose jsonl or parquet")


__all__ = ["ExportLabel", "ExportResponse", "ExportSummary", "TIE_POLICIES", "preference_rows", "write_jsonl",
           "write_parquet", "write_preferences", "Path"]
