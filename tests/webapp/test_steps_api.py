"""Steps (issue 13), through the REST API: splits stored and versioned on import and later, step items on
the annotation queue, step labels, LM pre-labels shown as suggestions and reviewed."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import token_for
from tests.webapp.test_annotation_api import Api
from webapp.annotation.models import Assignment, Comparison, StepLabel
from webapp.datasets.models import Dataset, Response, StepSplit

ROWS = [{"prompt": f"What is {i} + {i}?", "responses": [f"Step 1: take {i}\nStep 2: add {i}\nStep 3: get {2 * i}"]}
        for i in range(3)]


def _import(client, people, rows, **fields):
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    return client.post(f"/api/v1/projects/{people.project.pk}/datasets",
                       {"file": SimpleUploadedFile("steps.jsonl", content), **fields},
                       headers={"Authorization": f"Bearer {token_for(people.users['alice'])}"})


@pytest.fixture(params=["fast", "orm"])
def path(request, settings):
    settings.ANNOTATION_FAST_PATH = request.param == "fast"
    return request.param


@pytest.fixture
def step_items(client, people):
    r = _import(client, people, ROWS, step_rule="step_header")
    assert r.status_code == 201, r.content
    api = Api(client, people.users["alice"], people.project.pk)
    built = api.post("/steps/build", {"dataset_id": r.json()["id"], "overlap": 2})
    assert built.status_code == 201 and built.json() == {"created": 3}
    return Dataset.objects.get(pk=r.json()["id"])


@pytest.mark.django_db
def test_it_stores_the_split_as_spans_of_the_kept_text_and_versions_a_later_split(client, people, step_items):
    response = Response.objects.filter(prompt__dataset=step_items).order_by("id").first()
    split = StepSplit.objects.get(response=response)
    assert split.version == 1 and split.rule["kind"] == "step_header"
    assert [s["text"] for s in split.steps] == ["Step 1: take 0", "Step 2: add 0", "Step 3: get 0"]
    assert all(response.text[s["start"]:s["end"]] == s["text"] for s in split.steps)
    api = Api(client, people.users["alice"], people.project.pk)
    r = api.post(f"/datasets/{step_items.pk}/steps", {"rule": {"kind": "regex", "pattern": r"\n"}})
    assert r.status_code == 201 and r.json()["responses"] == 3 and r.json()["steps"] == 9
    assert sorted(StepSplit.objects.filter(response=response).values_list("version", flat=True)) == [1, 2]
    response.refresh_from_db()
    assert response.text == ROWS[0]["responses"][0]  # the original text is kept


@pytest.mark.django_db
def test_it_refuses_a_separator_that_yields_one_step_naming_the_row_and_imports_nothing(client, people):
    rows = ROWS + [{"prompt": "Short?", "responses": ["no steps here"]}]
    r = _import(client, people, rows, step_rule="newline")
    assert r.status_code == 422
    message = json.dumps(r.json())
    assert "row 4" in message and "1 step" in message
    assert not Response.objects.exists() and not StepSplit.objects.exists()
    bad = _import(client, people, ROWS, step_rule='{"kind": "regex", "pattern": "(?=x)"}')
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "step_rule"
    assert "RE2" in bad.json()["detail"][0]["message"]


@pytest.mark.django_db
def test_it_serves_step_items_only_in_step_mode_with_their_steps(client, people, step_items, path):
    carol = Api(client, people.users["carol"], people.project.pk)
    assert carol.post("/annotation/next").status_code == 204  # the pairwise queue never hands out a step item
    item = carol.post("/annotation/steps/next").json()
    assert item["kind"] == "steps" and item["scale"] == "ternary" and len(item["steps"]) == 3
    assert item["suggestion"] is None
    assert carol.post("/annotation/steps/next").json()["assignment_id"] == item["assignment_id"]  # held
    pairwise = carol.post("/annotation/labels", {"assignment_id": item["assignment_id"], "choice": "A"})
    assert pairwise.status_code == 422
    short = carol.post("/annotation/steps/labels", {"assignment_id": item["assignment_id"], "grades": [1, 1]})
    assert short.status_code == 422 and short.json()["detail"][0]["field"] == "grades"
    assert "2 grades for 3 steps" in short.json()["detail"][0]["message"]
    contradicting = carol.post("/annotation/steps/labels", {"assignment_id": item["assignment_id"],
                                                            "grades": [-1, 1, -1], "first_error": 2})
    assert contradicting.status_code == 422 and contradicting.json()["detail"][0]["field"] == "first_error"
    r = carol.post("/annotation/steps/labels", {"assignment_id": item["assignment_id"],
                                                "grades": ["good", "bad", "neutral"], "note": "adds wrong"})
    assert r.status_code == 201, r.content
    assert r.json()["grades"] == [1, -1, 0] and r.json()["first_error"] == 1 and r.json()["source"] == "human"
    again = carol.post("/annotation/steps/labels", {"assignment_id": item["assignment_id"], "grades": [1, 1, 1]})
    assert again.status_code == 409


@pytest.mark.django_db
def test_it_keeps_the_queue_guarantees_for_step_items(client, people, step_items, path):
    seen = {}
    for name in ("alice", "bob", "carol"):
        api = Api(client, people.users[name], people.project.pk)
        seen[name] = []
        while (r := api.post("/annotation/steps/next")).status_code == 200:
            item = r.json()
            seen[name].append(item["comparison_id"])
            assert api.post("/annotation/steps/labels", {"assignment_id": item["assignment_id"],
                                                         "grades": [1, 1, 1]}).status_code == 201
    assert all(len(v) == len(set(v)) for v in seen.values())  # no repeats
    assert sum(len(v) for v in seen.values()) == 6  # 3 items x overlap 2, then nothing more
    assert all(c.human_label_count == 2 and c.taken == 2 for c in Comparison.objects.filter(kind="steps"))


@pytest.mark.django_db
def test_it_shows_an_lm_pre_label_as_a_suggestion_and_stores_the_review_as_its_own_kind(client, people, step_items,
                                                                                       path):
    alice = Api(client, people.users["alice"], people.project.pk)
    comparison = Comparison.objects.filter(kind="steps").order_by("id").first()
    lm = alice.post("/steps/lm-labels", {"comparison_id": comparison.pk, "grades": [1, -1, -1],
                                         "model_version": "judge-x"})
    assert lm.status_code == 201 and lm.json()["first_error"] == 1 and lm.json()["source"] == "lm"
    mismatch = alice.post("/steps/lm-labels", {"comparison_id": comparison.pk, "grades": [1],
                                               "model_version": "judge-x"})
    assert mismatch.status_code == 422
    carol = Api(client, people.users["carol"], people.project.pk)
    item = carol.post("/annotation/steps/next").json()
    assert item["comparison_id"] == comparison.pk
    assert item["suggestion"]["grades"] == [1, -1, -1] and item["suggestion"]["model_version"] == "judge-x"
    r = carol.post("/annotation/steps/labels", {"assignment_id": item["assignment_id"], "grades": [1, -1, 0],
                                                "suggestion_id": item["suggestion"]["id"]})
    assert r.status_code == 201 and r.json()["source"] == "reviewed" and r.json()["changed_steps"] == 1
    stored = StepLabel.objects.get(pk=r.json()["id"])
    assert stored.suggestion_id == lm.json()["id"] and stored.annotator == people.users["carol"]


@pytest.mark.django_db
def test_an_abandoned_step_item_returns_to_the_pool(client, people, step_items, settings):
    settings.ANNOTATION_ASSIGNMENT_TIMEOUT_SECONDS = 0
    Comparison.objects.filter(kind="steps").update(overlap=1)
    bob = Api(client, people.users["bob"], people.project.pk)
    first = bob.post("/annotation/steps/next").json()
    Assignment.objects.filter(pk=first["assignment_id"]).update(expires_at="2000-01-01T00:00:00Z")
    from webapp.annotation.services import assignments_release_expired

    assert assignments_release_expired(project=people.project) == 1
    carol = Api(client, people.users["carol"], people.project.pk)
    assert carol.post("/annotation/steps/next").json()["comparison_id"] == first["comparison_id"]


@pytest.mark.django_db
def test_it_reports_step_agreement_first_error_agreement_and_human_lm_agreement(client, people, step_items):
    import krippendorff
    import numpy as np

    alice = Api(client, people.users["alice"], people.project.pk)
    comparisons = list(Comparison.objects.filter(kind="steps").order_by("id"))
    lm_grades = [[1, 1, 1], [1, -1, -1], [1, 1, 1]]
    for comparison, grades in zip(comparisons, lm_grades):
        assert alice.post("/steps/lm-labels", {"comparison_id": comparison.pk, "grades": grades,
                                               "model_version": "judge-x"}).status_code == 201
    given = {"bob": [[1, 1, 1], [1, -1, 0], [1, 0, -1]], "carol": [[1, 1, 1], [1, 1, -1], [1, 0, 1]]}
    for name, per_item in given.items():
        api = Api(client, people.users[name], people.project.pk)
        for _ in comparisons:
            item = api.post("/annotation/steps/next").json()
            grades = per_item[[c.pk for c in comparisons].index(item["comparison_id"])]
            assert api.post("/annotation/steps/labels", {"assignment_id": item["assignment_id"], "grades": grades,
                                                         }).status_code == 201
    report = alice.get("/agreement/steps").json()
    # reference: the krippendorff package over the 9 step units, raters bob and carol
    data = np.array([sum(given["bob"], []), sum(given["carol"], [])], dtype=float)
    assert report["steps"]["n_units"] == 9 and report["n_labels"] == 6
    assert report["steps"]["alpha_ordinal"] == pytest.approx(
        krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal"))
    # first wrong step by hand: bob (None, 1, 2) vs carol (None, 2, None): one match in three pairs
    assert report["first_error"] == {"n_pairs": 3, "n_items": 3, "exact_match": pytest.approx(1 / 3)}
    # human-LM by hand: 18 step grades; bob agrees on 3+2+1, carol on 3+2+2 -> 13 / 18
    assert report["human_lm"]["n_steps"] == 18
    assert report["human_lm"]["agreement"] == pytest.approx(13 / 18)
    assert [p["n_steps"] for p in report["human_lm"]["by_position"]] == [6, 6, 6]
    assert report["human_lm"]["by_position"][0]["agreement"] == 1.0


@pytest.mark.django_db
def test_it_exports_step_labels_as_trl_stepwise_rows_and_imports_them_back_without_loss(client, people, step_items):
    alice = Api(client, people.users["alice"], people.project.pk)
    first = Comparison.objects.filter(kind="steps").order_by("id").first()
    assert alice.post("/steps/lm-labels", {"comparison_id": first.pk, "grades": [1, 0, -1],
                                           "model_version": "judge-x"}).status_code == 201
    for name, grades in (("bob", [1, -1, -1]), ("carol", [0, 1, 1])):
        api = Api(client, people.users[name], people.project.pk)
        item = api.post("/annotation/steps/next").json()
        assert api.post("/annotation/steps/labels", {"assignment_id": item["assignment_id"], "grades": grades,
                                                     "note": f"by {name}"}).status_code == 201
    r = alice.get("/steps/export")
    assert r.status_code == 200 and r.headers["X-Rows-Out"] == "3"
    content = b"".join(r.streaming_content)
    rows = [json.loads(line) for line in content.decode().splitlines()]
    bob_row = next(row for row in rows if row["rater"] == "bob")
    assert bob_row["completions"] == ["Step 1: take 0", "Step 2: add 0", "Step 3: get 0"]
    assert bob_row["labels"] == [True, False, False] and bob_row["first_error"] == 1  # TRL's stepwise shape
    assert next(row for row in rows if row["rater"] == "carol")["labels"] == [True, True, True]  # neutral is not wrong
    back = client.post(f"/api/v1/projects/{people.project.pk}/steps/import",
                       {"file": SimpleUploadedFile("steps.jsonl", content)},
                       headers={"Authorization": f"Bearer {token_for(people.users['alice'])}"})
    assert back.status_code == 201, back.content
    imported = StepLabel.objects.filter(comparison__prompt__dataset_id=back.json()["id"]).order_by("id")
    keys = ("source", "scale", "grades", "first_error", "note")
    originals = StepLabel.objects.filter(comparison__prompt__dataset=step_items).order_by("id")
    assert [tuple(getattr(x, k) for k in keys) + (x.annotator_id,) for x in imported] == \
           [tuple(getattr(x, k) for k in keys) + (x.annotator_id,) for x in originals]
    assert [[s["text"] for s in x.step_split.steps] for x in imported] == \
           [[s["text"] for s in x.step_split.steps] for x in originals]
    bad = json.dumps({"prompt": "p", "completions": ["a", "b"], "labels": [True]}).encode()
    refused = client.post(f"/api/v1/projects/{people.project.pk}/steps/import",
                          {"file": SimpleUploadedFile("bad.jsonl", bad)},
                          headers={"Authorization": f"Bearer {token_for(people.users['alice'])}"})
    assert refused.status_code == 422 and "row 1, field 'labels'" in json.dumps(refused.json())
    assert Dataset.objects.count() == 2  # nothing half-imported


@pytest.mark.django_db
def test_the_fast_path_reads_a_step_item_with_its_steps_and_suggestion_in_one_statement(client, people, step_items,
                                                                                      settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from webapp.annotation.services import step_item_next

    comparison = Comparison.objects.filter(kind="steps").order_by("id").first()
    alice = Api(client, people.users["alice"], people.project.pk)
    assert alice.post("/steps/lm-labels", {"comparison_id": comparison.pk, "grades": [1, 1, 1],
                                           "model_version": "judge-old"}).status_code == 201
    latest = alice.post("/steps/lm-labels", {"comparison_id": comparison.pk, "grades": [1, -1, -1],
                                             "model_version": "judge-new"}).json()
    carol = people.users["carol"]
    settings.ANNOTATION_FAST_PATH = True
    step_item_next(project_id=people.project.pk, user=carol)  # claims; the expiry sweep's throttle is now set
    with CaptureQueriesContext(connection) as held:
        fast = step_item_next(project_id=people.project.pk, user=carol)
    assert [q["sql"] for q in held.captured_queries if "steplabel" in q["sql"] or "stepsplit" in q["sql"]] and \
        len(held.captured_queries) == 1, [q["sql"][:80] for q in held.captured_queries]
    settings.ANNOTATION_FAST_PATH = False
    orm = step_item_next(project_id=people.project.pk, user=carol)  # the same held item, read by the ORM
    keys = ("assignment_id", "comparison_id", "step_split_id", "scale", "steps", "suggestion")
    assert {k: fast[k] for k in keys} == {k: orm[k] for k in keys}
    assert fast["comparison_id"] == comparison.pk and fast["suggestion"]["id"] == latest["id"]
    assert fast["suggestion"] == {"id": latest["id"], "grades": [1, -1, -1], "first_error": 1,
                                  "model_version": "judge-new"}
    assert [s["text"] for s in fast["steps"]] == ["Step 1: take 0", "Step 2: add 0", "Step 3: get 0"]


@pytest.mark.django_db
def test_the_fast_path_submits_a_step_label_in_two_statements_storing_what_the_orm_path_stores(client, people,
                                                                                              step_items, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from webapp.annotation.services import step_item_next, step_label_submit

    settings.ANNOTATION_FAST_PATH = True
    comparison = Comparison.objects.filter(kind="steps").order_by("id").first()
    alice = Api(client, people.users["alice"], people.project.pk)
    lm = alice.post("/steps/lm-labels", {"comparison_id": comparison.pk, "grades": [1, 1, -1],
                                         "model_version": "judge-x"}).json()
    carol = people.users["carol"]
    item = step_item_next(project_id=people.project.pk, user=carol)
    with CaptureQueriesContext(connection) as queries:
        label = step_label_submit(project_id=people.project.pk, user=carol, assignment_id=item["assignment_id"],
                                  grades=["good", "bad", "bad"], note=" off by one ", suggestion_id=lm["id"])
    assert len(queries.captured_queries) == 2, [q["sql"][:80] for q in queries.captured_queries]
    stored = StepLabel.objects.get(pk=label.pk)
    assert (stored.source, stored.grades, stored.first_error, stored.changed_steps, stored.note) == \
        ("reviewed", [1, -1, -1], 1, 1, "off by one")
    assert stored.suggestion_id == lm["id"] and stored.annotator == carol and stored.step_split_id == \
        comparison.step_split_id and stored.assignment_id == item["assignment_id"]
    assert Assignment.objects.get(pk=item["assignment_id"]).status == "done"
    comparison.refresh_from_db()
    assert comparison.human_label_count == 1
    again = alice.post("/annotation/steps/labels", {"assignment_id": item["assignment_id"], "grades": [1, 1, 1]})
    assert again.status_code == 403  # not alice's assignment: the ORM path names it
    bob = Api(client, people.users["bob"], people.project.pk)
    held = bob.post("/annotation/steps/next").json()
    wrong = bob.post("/annotation/steps/labels", {"assignment_id": held["assignment_id"], "grades": [1, 1, 1],
                                                  "suggestion_id": lm["id"] + 999})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["field"] == "suggestion_id"


@pytest.mark.django_db
def test_it_imports_a_trl_stepwise_parquet_file_through_rlcores_readers(client, people):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    def upload(table, name):
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        return client.post(f"/api/v1/projects/{people.project.pk}/steps/import",
                           {"file": SimpleUploadedFile(name, buffer.getvalue())},
                           headers={"Authorization": f"Bearer {token_for(people.users['alice'])}"})

    table = pa.table({"prompt": ["2+2?", "3+3?"], "completions": [["2+2=4", "so 4"], ["3+3=7", "so 7", "done"]],
                      "labels": [[True, True], [False, False, False]]})
    r = upload(table, "steps.parquet")
    assert r.status_code == 201, r.content
    dataset = Dataset.objects.get(pk=r.json()["id"])
    assert dataset.source_format == "parquet" and dataset.row_count == 2
    splits = StepSplit.objects.filter(response__prompt__dataset=dataset).order_by("response_id")
    assert [[s["text"] for s in x.steps] for x in splits] == [["2+2=4", "so 4"], ["3+3=7", "so 7", "done"]]
    labels = StepLabel.objects.filter(comparison__prompt__dataset=dataset).order_by("id")
    assert [(x.grades, x.first_error) for x in labels] == [([1, 1], None), ([-1, -1, -1], 0)]
    mismatched = pa.table({"prompt": ["a?", "b?"], "completions": [["x", "y"], ["x", "y"]],
                           "labels": [[True, True], [True]]})
    refused = upload(mismatched, "bad.parquet")
    assert refused.status_code == 422 and "row 2, field 'labels'" in json.dumps(refused.json())
    assert Dataset.objects.count() == 1  # nothing half-imported


@pytest.mark.django_db
def test_the_dataset_import_reads_trl_stepwise_rows_as_steps_with_their_labels(client, people):
    rows = [{"prompt": "2+2?", "completions": ["2+2=4", "so 4"], "labels": [True, True]},
            {"prompt": "3+3?", "completions": ["3+3=7", "so 7"], "labels": [False, False]}]
    r = _import(client, people, rows)
    assert r.status_code == 201, r.content
    dataset = Dataset.objects.get(pk=r.json()["id"])
    assert dataset.status == "ready" and dataset.row_count == 2
    splits = StepSplit.objects.filter(response__prompt__dataset=dataset).order_by("response_id")
    assert [(x.source, [s["text"] for s in x.steps]) for x in splits] == [("file", ["2+2=4", "so 4"]),
                                                                         ("file", ["3+3=7", "so 7"])]
    assert [x.text for x in Response.objects.filter(prompt__dataset=dataset).order_by("id")] == \
        ["2+2=4\nso 4", "3+3=7\nso 7"]
    assert [x.grades for x in StepLabel.objects.filter(comparison__prompt__dataset=dataset).order_by("id")] == \
        [[1, 1], [-1, -1]]
    with_rule = _import(client, people, rows, step_rule="newline")
    assert with_rule.status_code == 422 and with_rule.json()["detail"][0]["field"] == "step_rule"
    assert Dataset.objects.count() == 1
