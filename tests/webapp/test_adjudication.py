"""Adjudication: disagreements side by side, a resolution recorded as its own label kind, left out of
agreement (not a rater) and exported marked; Dawid-Skene per rater over the same labels."""

import json

import pytest

from tests.webapp.label_quality_helpers import auth, label_next, pair_project
from webapp.annotation.models import PreferenceLabel


def _disagreeing(people):
    comparisons = pair_project(people, 3, overlap=2)
    for choice in ["a", "b", "a"]:
        label_next(people.project, people.users["carol"], choice, rationale=f"carol says {choice}")
    for choice in ["b", "b", "a"]:
        label_next(people.project, people.users["bob"], choice, rationale=f"bob says {choice}")
    return comparisons


@pytest.mark.django_db
def test_it_shows_disagreements_side_by_side_and_records_the_resolution_as_its_own_kind(client, people):
    comparisons = _disagreeing(people)
    url = f"/api/v1/projects/{people.project.pk}/adjudication"
    listed = client.get(url, headers=auth(people.users["dave"])).json()
    assert [d["comparison_id"] for d in listed] == [comparisons[0].pk]  # only the first is disputed
    labels = {(x["annotator"], x["choice"], x["rationale"]) for x in listed[0]["labels"]}
    assert labels == {("carol", "a", "carol says a"), ("bob", "b", "bob says b")}
    r = client.post(url + "/resolve", {"comparison_id": comparisons[0].pk, "choice": "b", "rationale": "B is right"},
                    content_type="application/json", headers=auth(people.users["alice"]))
    assert r.status_code == 201, r.content
    label = PreferenceLabel.objects.get(pk=r.json()["id"])
    assert (label.source, label.choice, label.annotator.username) == ("adjudication", "b", "alice")
    listed = client.get(url, headers=auth(people.users["dave"])).json()
    assert listed[0]["resolution"]["choice"] == "b" and len(listed[0]["labels"]) == 2
    r = client.post(url + "/resolve", {"comparison_id": comparisons[0].pk, "choice": "c"},
                    content_type="application/json", headers=auth(people.users["alice"]))
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "choice"


@pytest.mark.django_db
def test_it_does_not_count_an_adjudication_as_a_rater_in_agreement(client, people):
    comparisons = _disagreeing(people)
    before = client.get(f"/api/v1/projects/{people.project.pk}/agreement", headers=auth(people.users["dave"])).json()
    client.post(f"/api/v1/projects/{people.project.pk}/adjudication/resolve",
                {"comparison_id": comparisons[0].pk, "choice": "b"}, content_type="application/json",
                headers=auth(people.users["alice"]))
    after = client.get(f"/api/v1/projects/{people.project.pk}/agreement", headers=auth(people.users["dave"])).json()
    assert before["n_labels"] == after["n_labels"] == 6
    # percent agreement by hand: 2 of 3 comparisons agree (one pair of raters each)
    assert after["overall"]["percent_agreement"] == pytest.approx(2 / 3)
    assert after["overall"] == before["overall"]


@pytest.mark.django_db
def test_it_exports_the_adjudicated_label_marked(client, people):
    comparisons = _disagreeing(people)
    client.post(f"/api/v1/projects/{people.project.pk}/adjudication/resolve",
                {"comparison_id": comparisons[0].pk, "choice": "b"}, content_type="application/json",
                headers=auth(people.users["alice"]))
    r = client.get(f"/api/v1/projects/{people.project.pk}/export", headers=auth(people.users["dave"]))
    rows = [json.loads(line) for line in b"".join(r.streaming_content).decode().splitlines()]
    provenance = [json.loads(row["provenance"] or "{}") if isinstance(row["provenance"], str) else row["provenance"]
                  for row in rows]
    marked = [row for row, prov in zip(rows, provenance) if (prov or {}).get("adjudication")]
    assert len(rows) == 7 and len(marked) == 1
    assert marked[0]["comparison_id"] == str(comparisons[0].pk) and marked[0]["annotator"] == "alice"


@pytest.mark.django_db
def test_it_fits_dawid_skene_on_the_projects_labels_without_the_adjudications(client, people):
    from rlcore.analysis.raters import RaterLabel, fit_dawid_skene

    comparisons = _disagreeing(people)
    client.post(f"/api/v1/projects/{people.project.pk}/adjudication/resolve",
                {"comparison_id": comparisons[0].pk, "choice": "b"}, content_type="application/json",
                headers=auth(people.users["alice"]))
    r = client.get(f"/api/v1/projects/{people.project.pk}/raters", headers=auth(people.users["dave"]))
    assert r.status_code == 200, r.content
    body = r.json()
    hand = [("carol", "a"), ("carol", "b"), ("carol", "a"), ("bob", "b"), ("bob", "b"), ("bob", "a")]
    reference = fit_dawid_skene([RaterLabel(item_id=str(comparisons[i % 3].pk), rater=rater, label=label)
                                 for i, (rater, label) in enumerate(hand)])
    assert body["n_labels"] == 6 and "items" not in body
    got = {x["rater"]: x for x in body["raters"]}
    for rater in reference.raters:
        assert got[rater.rater]["accuracy"] == pytest.approx(rater.accuracy)
        assert (got[rater.rater]["n_labels"], got[rater.rater]["n_items"]) == (3, 3)


@pytest.mark.django_db
def test_it_answers_422_when_there_is_nothing_to_fit(client, people):
    r = client.get(f"/api/v1/projects/{people.project.pk}/raters", headers=auth(people.users["dave"]))
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "labels"
