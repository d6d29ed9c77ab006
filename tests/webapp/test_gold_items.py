"""Gold items: a known answer hidden among normal comparisons at the project's rate, scoring each
annotator (accuracy, count, Wilson interval computed here from its formula); a tie answer is refused."""

import math
import random

import pytest

from tests.webapp.label_quality_helpers import auth, label_next, pair_project
from webapp.annotation.models import Comparison


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.mark.django_db
def test_it_refuses_a_tie_gold_answer_with_a_message(client, people):
    comparisons = pair_project(people, 2)
    r = client.post(f"/api/v1/projects/{people.project.pk}/gold", {"comparison_ids": [comparisons[0].pk],
                    "answer": "tie"}, content_type="application/json", headers=auth(people.users["bob"]))
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "answer" and "cannot be a tie" in r.json()["detail"][0]["message"]
    assert not Comparison.objects.exclude(gold_answer="").exists()
    r = client.post(f"/api/v1/projects/{people.project.pk}/gold", {"comparison_ids": [comparisons[0].pk],
                    "answer": "a"}, content_type="application/json", headers=auth(people.users["carol"]))
    assert r.status_code == 403  # an annotator cannot see, let alone set, the answers


@pytest.mark.django_db
def test_it_scores_each_annotator_on_gold_with_count_and_wilson_interval(client, people):
    comparisons = pair_project(people, 6)
    gold = [c.pk for c in comparisons[:4]]
    r = client.post(f"/api/v1/projects/{people.project.pk}/gold", {"comparison_ids": gold, "answer": "a"},
                    content_type="application/json", headers=auth(people.users["bob"]))
    assert r.json() == {"updated": 4}
    # gold items are wanted by everyone who may label (alice, bob, carol)
    assert set(Comparison.objects.filter(pk__in=gold).values_list("overlap", flat=True)) == {3}
    carol_choices = iter(["a", "a", "b", "tie", "a", "a"])  # gold 1-4 in id order first (rate 0): 2 right of 4
    for _ in range(6):
        label_next(people.project, people.users["carol"], next(carol_choices))
    for choice in ["a", "a", "a", "a"]:
        label_next(people.project, people.users["bob"], choice)
    r = client.get(f"/api/v1/projects/{people.project.pk}/gold/scores", headers=auth(people.users["dave"]))
    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["n_gold_items"], body["n_gold_items_labelled"]) == (4, 4)
    scores = {s["rater"]: s for s in body["raters"]}
    assert (scores["carol"]["n_gold_labels"], scores["carol"]["n_correct"], scores["carol"]["n_tie_answers"]) == (4, 2, 1)
    assert (scores["carol"]["ci_low"], scores["carol"]["ci_high"]) == pytest.approx(wilson(2, 4))
    assert scores["bob"]["accuracy"] == 1.0 and scores["bob"]["ci_low"] == pytest.approx(wilson(4, 4)[0])


@pytest.mark.django_db
def test_it_hides_gold_items_among_normal_ones_at_the_owners_rate(client, people):
    comparisons = pair_project(people, 12)
    gold = {c.pk for c in comparisons[6:]}  # the gold items come last in id order
    client.post(f"/api/v1/projects/{people.project.pk}/gold", {"comparison_ids": sorted(gold), "answer": "b"},
                content_type="application/json", headers=auth(people.users["bob"]))
    people.project.gold_rate = 0.5
    people.project.save()
    random.seed(3)
    seen, items = [], []
    for _ in range(6):
        r = client.post(f"/api/v1/projects/{people.project.pk}/annotation/next", headers=auth(people.users["carol"]))
        items.append(r.json())
        seen.append(r.json()["comparison_id"])
        label_next(people.project, people.users["carol"], "a")
    n_gold = len(gold & set(seen))
    assert 1 <= n_gold <= 5  # mixed in: with rate 0 the first six (lowest ids) would hold no gold item
    # the annotator cannot tell them apart: the same fields, and no answer anywhere in the item
    assert {tuple(sorted(i)) for i in items} == {tuple(sorted(items[0]))}
    assert all("gold" not in str(i).lower() for i in items)


@pytest.mark.django_db
def test_it_sets_the_gold_rate_in_project_settings_and_refuses_more_than_half(client, people):
    client.force_login(people.users["alice"])
    url = f"/projects/{people.project.pk}/settings/"
    r = client.post(url, {"name": "Helpfulness", "gold_rate": "0.9"})
    assert r.status_code == 422
    r = client.post(url, {"name": "Helpfulness", "gold_rate": "0.1"})
    assert r.status_code == 302
    people.project.refresh_from_db()
    assert people.project.gold_rate == 0.1
