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


# member scores (r(first), r(second)) per comparison: the ensemble prefers the first response on 0-5,
# the second on 6, and its members disagree on 7.
SCORES = {
    "m0": [(2.0, 0.0)] * 6 + [(0.0, 2.0), (3.0, 0.0)],
    "m1": [(2.5, 0.0)] * 6 + [(0.0, 2.5), (0.0, 3.0)],
    "m2": [(1.5, 0.0)] * 6 + [(0.0, 1.5), (0.5, 0.0)],
}
# carol's labels: 0-5 agree except 1 and 4 (planted flips: "b"), 6 says "a" (flipped), 7 says "a"
CAROL = ["a", "b", "a", "a", "b", "a", "a", "a"]


def audited_ensemble(people, comparisons):
    """A three-member ensemble (one job, RewardModel rows with `member`) with stored scores per SCORES."""
    from webapp.jobs.models import Job
    from webapp.routing.models import ResponseRewardScore
    from webapp.training.models import RewardModel

    job = Job.objects.create(project=people.project, kind="train_reward_model", created_by=people.users["alice"],
                             state="succeeded")
    for j, (name, scores) in enumerate(SCORES.items()):
        model = RewardModel.objects.create(project=people.project, job=job, name=name, path=f"/m/{name}",
                                           backbone="b", snapshot_path="/s", spec={}, member=j)
        for comparison, (first, second) in zip(comparisons, scores):
            ResponseRewardScore.objects.create(response_id=comparison.response_ids[0], reward_model=model, score=first)
            ResponseRewardScore.objects.create(response_id=comparison.response_ids[1], reward_model=model,
                                               score=second)
    return job


def carol_labelled(people):
    """len(CAROL) pair comparisons, labelled by carol through the queue as CAROL says."""
    comparisons = pair_project(people, len(CAROL))
    for choice in CAROL:
        label_next(people.project, people.users["carol"], choice)
    return comparisons
