"""The annotation queue, labels, undo, skip, overlap changes and export, through the REST API."""

import io
import json

import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import token_for
from webapp.annotation.models import Assignment, Comparison, PreferenceLabel
from webapp.annotation.services import comparisons_build
from webapp.datasets.models import Dataset
from webapp.projects.models import Membership


class Api:
    def __init__(self, client, user, project_id):
        self.client, self.headers, self.base = client, {"Authorization": f"Bearer {token_for(user)}"}, \
            f"/api/v1/projects/{project_id}"

    def post(self, path, data=None):
        return self.client.post(self.base + path, data if data is not None else {}, content_type="application/json",
                                headers=self.headers)

    def get(self, path, **params):
        return self.client.get(self.base + path, params, headers=self.headers)


def _dataset(client, people, rows, **fields) -> Dataset:
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    r = client.post(f"/api/v1/projects/{people.project.pk}/datasets",
                    {"file": SimpleUploadedFile("d.jsonl", content), **fields},
                    headers={"Authorization": f"Bearer {token_for(people.users['alice'])}"})
    assert r.status_code == 201, r.content
    return Dataset.objects.get(pk=r.json()["id"])


PAIRS = [{"prompt": f"Question {i}?", "responses": [f"answer {i} A", f"answer {i} B"]} for i in range(4)]


@pytest.fixture(params=["fast", "orm"])
def path(request, settings):
    """Run a queue test on PostgreSQL's single-statement path and on the portable ORM path."""
    settings.ANNOTATION_FAST_PATH = request.param == "fast"
    return request.param


@pytest.fixture
def pairs(client, people):
    dataset = _dataset(client, people, PAIRS)
    comparisons_build(project=people.project, dataset=dataset, strategy="all_pairs", overlap=2)
    return dataset


@pytest.mark.django_db
def test_it_builds_all_pairs_sampled_pairs_and_rankings(client, people):
    dataset = _dataset(client, people, [{"prompt": "p", "responses": ["a", "b", "c", "d"]},
                                        {"prompt": "q", "responses": ["e", "f"]}])
    api = Api(client, people.users["bob"], people.project.pk)
    r = api.post("/comparisons/build", {"dataset_id": dataset.pk, "strategy": "all_pairs"})
    assert r.status_code == 201 and r.json() == {"created": 6 + 1}
    assert api.post("/comparisons/build", {"dataset_id": dataset.pk}).json() == {"created": 0}  # no duplicates
    r = api.post("/comparisons/build", {"dataset_id": dataset.pk, "strategy": "ranking", "ranking_size": 3})
    assert r.json() == {"created": 1}
    ranking = Comparison.objects.get(kind="ranking")
    assert len(ranking.response_ids) == 3
    Comparison.objects.all().delete()
    r = api.post("/comparisons/build", {"dataset_id": dataset.pk, "strategy": "sampled_pairs", "pairs_per_prompt": 2,
                                        "seed": 7})
    assert r.json() == {"created": 3}
    bad = api.post("/comparisons/build", {"dataset_id": dataset.pk, "strategy": "triples", "overlap": 0})
    assert bad.status_code == 422
    assert {d["field"] for d in bad.json()["detail"]} == {"strategy", "overlap"}


@pytest.mark.django_db
def test_it_serves_an_item_in_a_per_annotator_order_and_stores_the_order_with_the_label(client, people, pairs, path):
    api = Api(client, people.users["carol"], people.project.pk)
    item = api.post("/annotation/next").json()
    assert api.post("/annotation/next").json()["assignment_id"] == item["assignment_id"]  # same item until labelled
    comparison = Comparison.objects.get(pk=item["comparison_id"])
    shown = [r["response_id"] for r in item["responses"]]
    assert sorted(shown) == sorted(comparison.response_ids)
    r = api.post("/annotation/labels", {"assignment_id": item["assignment_id"], "choice": "B", "strength": 2,
                                        "rationale": "B is right"})
    assert r.status_code == 201, r.content
    label = PreferenceLabel.objects.get()
    assert label.display_order == shown
    winner = shown[1]
    assert label.choice == ("a" if winner == comparison.response_ids[0] else "b")
    assert (label.strength, label.rationale, label.annotator, label.source) == (2, "B is right", people.users["carol"],
                                                                              "human")


@pytest.mark.django_db
def test_it_randomises_the_display_order_across_annotators(client, people):
    dataset = _dataset(client, people, [{"prompt": f"q{i}", "responses": ["x", "y"]} for i in range(40)])
    comparisons_build(project=people.project, dataset=dataset, overlap=1)
    api = Api(client, people.users["carol"], people.project.pk)
    flipped = 0
    for _ in range(40):
        item = api.post("/annotation/next").json()
        c = Comparison.objects.get(pk=item["comparison_id"])
        flipped += [r["response_id"] for r in item["responses"]] != c.response_ids
        api.post("/annotation/labels", {"assignment_id": item["assignment_id"], "choice": "tie"})
    assert 5 < flipped < 35


@pytest.mark.django_db
def test_it_never_gives_an_annotator_the_same_comparison_twice_and_respects_overlap(client, people, pairs, path):
    seen = {}
    for name in ("carol", "bob", "alice"):
        api = Api(client, people.users[name], people.project.pk)
        seen[name] = []
        while True:
            r = api.post("/annotation/next")
            if r.status_code == 204:
                break
            item = r.json()
            seen[name].append(item["comparison_id"])
            assert api.post("/annotation/labels", {"assignment_id": item["assignment_id"], "choice": "A"}).status_code == 201
    assert len(seen["carol"]) == len(set(seen["carol"])) == 4 and len(seen["bob"]) == 4
    assert seen["alice"] == []  # overlap 2 reached everywhere
    for c in Comparison.objects.all():
        assert c.labels.count() == 2 == c.human_label_count == c.taken


@pytest.mark.django_db
def test_it_rejects_a_label_for_an_item_not_assigned_to_you(client, people, pairs, path):
    item = Api(client, people.users["carol"], people.project.pk).post("/annotation/next").json()
    bob = Api(client, people.users["bob"], people.project.pk)
    r = bob.post("/annotation/labels", {"assignment_id": item["assignment_id"], "choice": "A"})
    assert r.status_code == 403 and "not assigned to you" in r.json()["detail"]
    r = bob.post("/annotation/labels", {"comparison_id": item["comparison_id"], "choice": "A"})
    assert r.status_code == 403
    assert not PreferenceLabel.objects.exists()


@pytest.mark.django_db
def test_it_rejects_a_second_label_for_the_same_comparison(client, people, pairs, path):
    api = Api(client, people.users["carol"], people.project.pk)
    item = api.post("/annotation/next").json()
    assert api.post("/annotation/labels", {"assignment_id": item["assignment_id"], "choice": "A"}).status_code == 201
    again = api.post("/annotation/labels", {"assignment_id": item["assignment_id"], "choice": "B"})
    assert again.status_code == 409 and "already labelled" in again.json()["detail"]
    assert PreferenceLabel.objects.get().choice in ("a", "b") and PreferenceLabel.objects.count() == 1


@pytest.mark.django_db
def test_the_queue_answers_who_may_not_label_with_404_or_403_and_changes_nothing(client, people, pairs, path):
    """The right to label is checked inside the queue's statements on PostgreSQL; the answers must
    stay those of project_for_user, also for an annotator whose role or membership changed mid-item."""
    carol = Api(client, people.users["carol"], people.project.pk)
    item = carol.post("/annotation/next").json()
    assignments = Assignment.objects.count()

    for name, status in (("dave", 403), ("eve", 404)):  # a viewer; an outsider
        other = Api(client, people.users[name], people.project.pk)
        r = other.post("/annotation/next")
        assert r.status_code == status, (name, r.content)
        r = other.post("/annotation/labels", {"assignment_id": item["assignment_id"], "choice": "A"})
        assert r.status_code == status, (name, r.content)

    membership = Membership.objects.get(project=people.project, user=people.users["carol"])
    membership.role = "viewer"
    membership.save()
    r = carol.post("/annotation/labels", {"assignment_id": item["assignment_id"], "choice": "A"})
    assert r.status_code == 403 and "viewer" in r.json()["detail"]
    assert carol.post("/annotation/next").status_code == 403
    membership.delete()
    assert carol.post("/annotation/labels", {"assignment_id": item["assignment_id"], "choice": "A"}).status_code == 404
    assert carol.post("/annotation/next").status_code == 404
    assert Assignment.objects.count() == assignments and not PreferenceLabel.objects.exists()


@pytest.mark.django_db
def test_it_rejects_labels_on_a_closed_project(client, people, pairs, path):
    api = Api(client, people.users["carol"], people.project.pk)
    item = api.post("/annotation/next").json()
    people.project.is_closed = True
    people.project.save()
    r = api.post("/annotation/labels", {"assignment_id": item["assignment_id"], "choice": "A"})
    assert r.status_code == 409 and "closed" in r.json()["detail"]
    assert api.post("/annotation/next").status_code == 409
    assert not PreferenceLabel.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("body,field", [({"choice": "C"}, "choice"), ({"choice": "A", "strength": 7}, "strength"),
                                        ({"choice": "A", "criterion_scores": {"A": {"x": 1}}}, "criterion_scores")])
def test_it_rejects_a_malformed_label_naming_the_field(client, people, pairs, body, field):
    api = Api(client, people.users["carol"], people.project.pk)
    item = api.post("/annotation/next").json()
    r = api.post("/annotation/labels", {"assignment_id": item["assignment_id"], **body})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == field
    assert Assignment.objects.get(pk=item["assignment_id"]).status == "active"
    assert not PreferenceLabel.objects.exists()


@pytest.mark.django_db
def test_it_undoes_the_last_label_and_serves_that_item_again(client, people, pairs, path):
    api = Api(client, people.users["carol"], people.project.pk)
    first = api.post("/annotation/next").json()
    api.post("/annotation/labels", {"assignment_id": first["assignment_id"], "choice": "A"})
    api.post("/annotation/next")
    r = api.post("/annotation/undo")
    assert r.status_code == 200 and r.json()["comparison_id"] == first["comparison_id"]
    assert not PreferenceLabel.objects.exists()
    assert api.post("/annotation/next").json()["comparison_id"] == first["comparison_id"]
    assert api.post("/annotation/labels", {"assignment_id": first["assignment_id"], "choice": "B"}).status_code == 201
    assert Comparison.objects.get(pk=first["comparison_id"]).human_label_count == 1
    assert api.post("/annotation/undo").status_code == 200
    assert api.post("/annotation/undo").status_code == 409  # nothing left to undo


@pytest.mark.django_db
def test_it_returns_a_skipped_item_to_others_but_not_to_the_skipper(client, people):
    dataset = _dataset(client, people, [{"prompt": "only", "responses": ["a", "b"]}])
    comparisons_build(project=people.project, dataset=dataset, overlap=1)
    carol = Api(client, people.users["carol"], people.project.pk)
    bob = Api(client, people.users["bob"], people.project.pk)
    item = carol.post("/annotation/next").json()
    assert bob.post("/annotation/next").status_code == 204  # the only slot is taken
    assert carol.post("/annotation/skip", {"assignment_id": item["assignment_id"]}).status_code == 204
    assert carol.post("/annotation/next").status_code == 204
    assert bob.post("/annotation/next").json()["comparison_id"] == item["comparison_id"]


@pytest.mark.django_db
def test_it_returns_an_abandoned_assignment_to_the_pool_after_the_timeout(client, people, settings, path):
    settings.ANNOTATION_ASSIGNMENT_TIMEOUT_SECONDS = 0.2
    dataset = _dataset(client, people, [{"prompt": "only", "responses": ["a", "b"]}])
    comparisons_build(project=people.project, dataset=dataset, overlap=1)
    carol = Api(client, people.users["carol"], people.project.pk)
    bob = Api(client, people.users["bob"], people.project.pk)
    item = carol.post("/annotation/next").json()
    assert bob.post("/annotation/next").status_code == 204
    import time

    time.sleep(0.3)
    assert bob.post("/annotation/next").json()["comparison_id"] == item["comparison_id"]
    late = carol.post("/annotation/labels", {"assignment_id": item["assignment_id"], "choice": "A"})
    assert late.status_code == 409 and "expired" in late.json()["detail"]
    assert Comparison.objects.get().taken == 1


@pytest.mark.django_db
def test_it_changes_overlap_after_labelling_started(client, people, pairs):
    designer = Api(client, people.users["bob"], people.project.pk)
    carol = Api(client, people.users["carol"], people.project.pk)
    item = carol.post("/annotation/next").json()
    carol.post("/annotation/labels", {"assignment_id": item["assignment_id"], "choice": "A"})
    held = carol.post("/annotation/next").json()
    r = designer.post("/comparisons/overlap", {"overlap": 1})
    assert r.status_code == 200 and r.json() == {"updated": 4}
    # carol's open item stays hers (1 slot of 1); the labelled one is full.
    assert Comparison.objects.get(pk=item["comparison_id"]).taken == 1
    alice = Api(client, people.users["alice"], people.project.pk)
    got = set()
    while (r := alice.post("/annotation/next")).status_code == 200:
        got.add(r.json()["comparison_id"])
        alice.post("/annotation/labels", {"assignment_id": r.json()["assignment_id"], "choice": "tie"})
    assert got == set(Comparison.objects.values_list("id", flat=True)) - {item["comparison_id"], held["comparison_id"]}
    designer.post("/comparisons/overlap", {"overlap": 3})
    assert alice.post("/annotation/next").status_code == 200
    assert designer.post("/comparisons/overlap", {"overlap": 0}).status_code == 422
    assert Api(client, people.users["carol"], people.project.pk).post("/comparisons/overlap",
                                                                        {"overlap": 2}).status_code == 403


@pytest.mark.django_db
def test_it_keeps_viewers_and_outsiders_away_from_the_queue(client, people, pairs):
    assert Api(client, people.users["dave"], people.project.pk).post("/annotation/next").status_code == 403
    assert Api(client, people.users["eve"], people.project.pk).post("/annotation/next").status_code == 404
    assert not Assignment.objects.exists()


def _label_everything(client, people, choices):
    """carol and bob label every comparison (choices cycle per annotator, as shown)."""
    for name, choice_list in choices.items():
        api = Api(client, people.users[name], people.project.pk)
        i = 0
        while (r := api.post("/annotation/next")).status_code == 200:
            item = r.json()
            choice, strength = choice_list[i % len(choice_list)]
            api.post("/annotation/labels", {"assignment_id": item["assignment_id"], "choice": choice,
                                            "strength": strength, "rationale": f"{name} {i}"})
            i += 1


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("conversational", [False, True])
def test_it_exports_trl_preferences_that_import_back_with_every_label(client, people, pairs, fmt, conversational):
    _label_everything(client, people, {"carol": [("A", 2), ("tie", 1), ("B", 1)], "bob": [("B", 1), ("A", 1)]})
    viewer = Api(client, people.users["dave"], people.project.pk)
    r = viewer.get("/export", format=fmt, conversational=str(conversational).lower(), tie_policy="keep")
    assert r.status_code == 200
    content = b"".join(r.streaming_content)
    rows = ([json.loads(line) for line in content.decode().splitlines()] if fmt == "jsonl"
            else pq.read_table(io.BytesIO(content)).to_pylist())
    assert len(rows) == PreferenceLabel.objects.count() == 8
    for row in rows:
        label = PreferenceLabel.objects.get(pk=int(row["label_id"]))
        responses = {r.pk: r.text for r in label.comparison.prompt.responses.all()}
        chosen_id = label.comparison.response_ids[0 if label.choice in ("a", "tie") else 1]
        chosen = row["chosen"][0]["content"] if conversational else row["chosen"]
        assert chosen == responses[chosen_id]
        assert row["margin"] == (0 if label.choice == "tie" else label.strength)
        assert (row["annotator"], row["source"]) == (label.annotator.username, "human")
    if conversational:
        assert rows[0]["prompt"][0]["role"] == "user"
    # round trip: import the export into a fresh project
    from webapp.projects.services import project_create

    other = project_create(user=people.users["alice"], name="Round trip")
    Membership.objects.create(project=other, user=people.users["carol"], role="annotator")
    Membership.objects.create(project=other, user=people.users["bob"], role="designer")
    up = client.post(f"/api/v1/projects/{other.pk}/datasets",
                     {"file": SimpleUploadedFile(f"export.{fmt}", content)},
                     headers={"Authorization": f"Bearer {token_for(people.users['alice'])}"})
    assert up.status_code == 201, up.content
    assert up.json()["label_count"] == 8

    def key(label):
        c = label.comparison
        texts = [c.prompt.responses.get(pk=rid).text for rid in c.response_ids]
        return (c.prompt.text if not conversational else c.prompt.text.removeprefix("user: "), tuple(texts),
                label.choice, label.strength, label.annotator.username, label.source, label.rationale,
                tuple(texts[c.response_ids.index(r)] for r in label.display_order))

    before = sorted(key(lab) for lab in PreferenceLabel.objects.filter(comparison__project=people.project))
    after = sorted(key(lab) for lab in PreferenceLabel.objects.filter(comparison__project=other))
    assert before == after


@pytest.mark.django_db
@pytest.mark.parametrize("policy,rows", [("drop", 6), ("keep", 8), ("split", 10)])
def test_it_applies_the_tie_policy(client, people, pairs, policy, rows):
    _label_everything(client, people, {"carol": [("A", 2), ("tie", 1)], "bob": [("B", 1)]})
    r = Api(client, people.users["alice"], people.project.pk).get("/export", tie_policy=policy)
    lines = [json.loads(x) for x in b"".join(r.streaming_content).decode().splitlines()]
    assert len(lines) == rows
    assert all(x["margin"] == 0 for x in lines if x["choice"] == "tie")
    # a kept tie is marked as one, not written as a win of position 0 (the trainer gives it target 1/2)
    assert all(x["tie"] == (x["choice"] == "tie") for x in lines)
    # the response says what the file rests on: 8 labels in, the rows out, ties dropped by policy
    labels = PreferenceLabel.objects.count()
    ties = PreferenceLabel.objects.filter(choice="tie").count()
    assert (int(r["X-Labels-In"]), int(r["X-Rows-Out"])) == (labels, rows)
    assert json.loads(r["X-Labels-Dropped"]) == ({"tie (tie policy 'drop')": ties} if policy == "drop" else {})
    assert int(r["X-Tie-Rows"]) == {"drop": 0, "keep": ties, "split": 2 * ties}[policy]
    bad = Api(client, people.users["alice"], people.project.pk).get("/export", tie_policy="coin-flip")
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "tie_policy"


@pytest.mark.django_db
def test_it_takes_an_n_way_ranking_and_exports_every_implied_pair(client, people):
    dataset = _dataset(client, people, [{"prompt": "Rank these", "responses": ["r0", "r1", "r2"]}])
    comparisons_build(project=people.project, dataset=dataset, strategy="ranking")
    api = Api(client, people.users["carol"], people.project.pk)
    item = api.post("/annotation/next").json()
    assert item["kind"] == "ranking" and [r["letter"] for r in item["responses"]] == ["A", "B", "C"]
    ids = {r["text"]: r["response_id"] for r in item["responses"]}
    partial = api.post("/annotation/labels", {"assignment_id": item["assignment_id"], "ranking": [ids["r2"], ids["r0"]]})
    assert partial.status_code == 422 and partial.json()["detail"][0]["field"] == "ranking"
    r = api.post("/annotation/labels", {"assignment_id": item["assignment_id"],
                                        "ranking": [ids["r2"], ids["r0"], ids["r1"]]})
    assert r.status_code == 201 and r.json()["choice"] == "ranking"
    lines = [json.loads(x) for x in b"".join(
        Api(client, people.users["alice"], people.project.pk).get("/export").streaming_content).decode().splitlines()]
    assert [(x["chosen"], x["rejected"], x["margin"]) for x in lines] == [("r2", "r0", 1.0), ("r2", "r1", 2.0),
                                                                           ("r0", "r1", 1.0)]


@pytest.mark.django_db
def test_it_records_lm_labels_with_provenance_apart_from_the_human_queue(client, people, pairs):
    from webapp.annotation.services import lm_label_create

    comparison = Comparison.objects.first()
    label = lm_label_create(comparison=comparison, choice="b", strength=1, model_version="judge-7b@v3",
                            provenance={"prompt": "...", "raw": "B", "verdicts": ["B", "B"], "confidence": 0.9})
    assert label.annotator is None and label.source == "lm"
    comparison.refresh_from_db()
    assert comparison.taken == 0 and comparison.human_label_count == 0  # LM labels use no human slot
    lines = [json.loads(x) for x in b"".join(Api(client, people.users["alice"], people.project.pk)
                                              .get("/export", source="lm").streaming_content).decode().splitlines()]
    assert len(lines) == 1 and lines[0]["source"] == "lm" and lines[0]["model_version"] == "judge-7b@v3"
    assert json.loads(lines[0]["provenance"])["confidence"] == 0.9
    people.project.is_closed = True
    people.project.save()
    with pytest.raises(Exception, match="closed"):
        lm_label_create(comparison=Comparison.objects.select_related("project").first(), choice="a",
                        model_version="j", provenance={})


@pytest.mark.django_db
def test_it_reports_agreement_on_n_way_rankings_as_implied_pairs(client, people):
    """Hand-computed: carol ranks r2 > r0 > r1, bob r2 > r1 > r0, an LM judge like carol.
    Implied pairs (r0,r1), (r0,r2), (r1,r2): carol-bob agree on 2 of 3, carol-LM on 3, bob-LM on 2."""
    from webapp.annotation.services import lm_label_create

    dataset = _dataset(client, people, [{"prompt": "Rank these", "responses": ["r0", "r1", "r2"]}])
    comparisons_build(project=people.project, dataset=dataset, strategy="ranking", overlap=2)
    for name, order in (("carol", ["r2", "r0", "r1"]), ("bob", ["r2", "r1", "r0"])):
        api = Api(client, people.users[name], people.project.pk)
        item = api.post("/annotation/next").json()
        ids = {r["text"]: r["response_id"] for r in item["responses"]}
        r = api.post("/annotation/labels", {"assignment_id": item["assignment_id"], "ranking": [ids[t] for t in order]})
        assert r.status_code == 201, r.content
    lm_label_create(comparison=Comparison.objects.select_related("project").get(), choice="ranking",
                    ranking=[ids["r2"], ids["r0"], ids["r1"]], model_version="judge@1", provenance={})

    body = Api(client, people.users["alice"], people.project.pk).get("/agreement").json()
    assert body["n_labels"] == 0 and body["overall"]["n_pairs"] == 0  # no pairwise labels
    rankings = body["rankings"]
    assert rankings["n_rankings"] == 3 and rankings["overall"]["n_comparisons"] == 3  # response pairs
    hh, hl = rankings["by_pair_kind"]["human-human"], rankings["by_pair_kind"]["human-lm"]
    assert hh["percent_agreement"] == pytest.approx(2 / 3) and hh["n_pairs"] == 3
    # carol A,B,B vs bob B,B,B: p_o = 2/3 = p_e, so Cohen's kappa is 0
    assert hh["cohen_kappa"] == pytest.approx(0.0)
    assert hl["percent_agreement"] == pytest.approx(5 / 6) and hl["n_pairs"] == 6
    assert rankings["overall"]["percent_agreement"] == pytest.approx(7 / 9)
    carol = next(a for a in rankings["per_annotator"] if a["rater_id"] == "carol")
    assert carol["stats"]["percent_agreement"] == pytest.approx(5 / 6)
    client.force_login(people.users["alice"])
    page = client.get(f"/projects/{people.project.pk}/agreement/").content.decode()
    assert 'id="agreement-rankings"' in page and "3 rankings" in page
    assert 'id="agreement-ranking-annotators"' in page and 'data-rater="carol"' in page
