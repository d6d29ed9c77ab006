"""Shared set-up for the judging and routing tests: a dataset of pairs, built into comparisons."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from rlcore.judges.testing_server import ScriptedReply, prefers_keyword


def pairs_dataset(*, project, user, rows: list[dict], name: str = "pairs", overlap: int = 1):
    """Import rows ({"prompt", "responses": [a, b], ...}) and build one comparison per row."""
    from webapp.annotation.services import comparisons_build
    from webapp.datasets.services import dataset_create, dataset_import_run

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        dataset = dataset_create(project=project, user=user, name=name, path=path)
        dataset = dataset_import_run(dataset_id=dataset.pk)
    comparisons_build(project=project, dataset=dataset, strategy="all_pairs", overlap=overlap)
    return dataset


def keyword_rows(n: int, *, biased_every: int = 0, refuse_every: int = 0) -> list[dict]:
    """Pairs where one answer says "thanks" (the judge's preference) or, every `biased_every`th, neither
    does (the judge below then answers by position), or, every `refuse_every`th, the judge refuses."""
    rows = []
    for i in range(n):
        if refuse_every and i % refuse_every == refuse_every - 1:
            rows.append({"prompt": f"REFUSE question {i}", "responses": [f"answer {i} one", f"answer {i} two"],
                         "topic": "refusal"})
        elif biased_every and i % biased_every == biased_every - 1:
            rows.append({"prompt": f"Question {i} about cats?", "responses": [f"cats {i}", f"dogs {i} and more words"],
                         "topic": "pets"})
        else:
            good, bad = f"Sure, here is answer {i}, thanks", f"no {i}"
            rows.append({"prompt": f"Question {i}?", "responses": [good, bad] if i % 2 else [bad, good],
                         "topic": "chat"})
    return rows


def judge_policy(body: dict) -> ScriptedReply:
    """A judge for keyword_rows: prefers the "thanks" answer (both orders agree), says "A" when neither
    has it (position bias: the two orders disagree), refuses REFUSE prompts."""
    text = str(body["messages"][-1]["content"])
    if "REFUSE" in text:
        return ScriptedReply(content=None, refusal="I can't help with that.")
    if "thanks" in text:
        return prefers_keyword("thanks")(body)
    return ScriptedReply(content="Verdict: A\nStrength: 1")
