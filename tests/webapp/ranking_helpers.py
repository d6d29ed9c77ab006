"""Shared set-up for the LM ranking tests: a dataset built into N-way ranking comparisons."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def rankings_dataset(*, project, user, rows):
    """Import rows ({"prompt", "responses": [3+]}) and build one N-way comparison per prompt."""
    from webapp.annotation.services import comparisons_build
    from webapp.datasets.services import dataset_create, dataset_import_run

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rankings.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        dataset = dataset_create(project=project, user=user, name="rankings", path=path)
        dataset = dataset_import_run(dataset_id=dataset.pk)
    comparisons_build(project=project, dataset=dataset, strategy="ranking")


def ranking_rows() -> list[dict]:
    """Five prompts whose responses say "thanks" 0, 1 or 2 times (shuffled), one the judge refuses
    (REFUSE), one it ranks by position (POSITION)."""
    out = []
    for i in range(5):
        texts = [f"plain {i}", f"ok {i}, thanks", f"great {i}, thanks and thanks"]
        out.append({"prompt": f"Question {i}?", "responses": texts[i % 3:] + texts[:i % 3]})
    out.append({"prompt": "REFUSE this one", "responses": ["r one", "r two", "r three"]})
    out.append({"prompt": "POSITION question", "responses": ["p one", "p two", "p three"]})
    return out


def politeness_rubric(*, project, user):
    """An annotation rubric with one judge-graded criterion (polite, 1..3) and one rule (short)."""
    from webapp.rubrics.services import rubric_create

    return rubric_create(project=project, user=user, name="politeness", use_for_annotation=True, definition={
        "criteria": [{"name": "polite", "description": "is courteous", "scale_min": 1, "scale_max": 3},
                     {"name": "short", "rule": {"kind": "length", "max": 200}}]})
