"""Shared set-up for the label-quality tests (audit, gold items, adjudication): pair comparisons labelled
through the real queue, so taken / overlap / assignments are what annotators leave behind."""

from __future__ import annotations

from tests.webapp.routing_helpers import pairs_dataset
from webapp.annotation.models import Comparison


def pair_project(people, n: int, *, overlap: int = 1) -> list[Comparison]:
    rows = [{"prompt": f"Question {i}?", "responses": [f"first answer {i}", f"second answer {i}"]} for i in range(n)]
    pairs_dataset(project=people.project, user=people.users["alice"], rows=rows, overlap=overlap)
    return list(Comparison.objects.filter(project=people.project).order_by("id"))


def label_next(project, user, canonical: str, *, rationale: str = "") -> int:
    """Take the user's next item from the queue and label it with a canonical choice (a / b / tie);
    returns the comparison id."""
    from webapp.annotation.models import Comparison
    from webapp.annotation.services import assignment_next_item, label_submit

    item = assignment_next_item(project=project, user=user)
    assert item is not None, f"{user} got no item"
    comparison = Comparison.objects.get(pk=item["comparison_id"])
    if canonical == "tie":
        letter = "tie"
    else:
        wanted = comparison.response_ids[0 if canonical == "a" else 1]
        letter = next(r["letter"] for r in item["responses"] if r["response_id"] == wanted)
    label_submit(project=project, user=user, choice=letter, assignment_id=item["assignment_id"], rationale=rationale)
    return comparison.pk


def auth(user) -> dict:
    from tests.conftest import token_for

    return {"Authorization": f"Bearer {token_for(user)}"}
