"""Auditing labels with a reward-model ensemble: each pair label's mean and spread of the members' reward
differences, checked by hand (statistics module), the flipped labels found, and the one action that sends
the flagged comparisons to a different annotator, with its counts shown before it runs."""

import statistics

import pytest

from tests.webapp.label_quality_helpers import CAROL, SCORES, auth, label_next, pair_project
from tests.webapp.label_quality_helpers import audited_ensemble as _ensemble
from tests.webapp.label_quality_helpers import carol_labelled as _labelled
from webapp.annotation.models import Comparison

@pytest.mark.django_db
def test_it_gives_each_label_the_ensembles_mean_and_spread_and_flags_the_planted_flips(client, people):
    comparisons = _labelled(people)
    job = _ensemble(people, comparisons)
    r = client.get(f"/api/v1/projects/{people.project.pk}/audit?ensemble_job_id={job.pk}",
                   headers=auth(people.users["bob"]))
    assert r.status_code == 200, r.content
    body = r.json()
    assert (body["n_members"], body["n_pairs"]) == (3, 8)
    by_comparison = {body["comparison_of_label"][p["pair_id"]]: p for p in body["pairs"]}
    for i, (c, choice) in enumerate(zip(comparisons, CAROL)):
        diffs = [(s[i][0] - s[i][1]) * (1 if choice == "a" else -1) for s in SCORES.values()]
        got = by_comparison[c.pk]
        assert got["mean"] == pytest.approx(statistics.mean(diffs))
        assert got["std"] == pytest.approx(statistics.stdev(diffs))
    flags = {c.pk: by_comparison[c.pk]["flag"] for c in comparisons}
    ids = [c.pk for c in comparisons]
    assert [k for k, f in flags.items() if f == "probably_wrong"] == [ids[1], ids[4], ids[6]]
    assert [k for k, f in flags.items() if f == "ambiguous"] == [ids[7]]
    assert body["send_back"] == {"flags": ["probably_wrong", "ambiguous"], "labels": 4, "comparisons": 4,
                                 "comparison_ids": [ids[1], ids[4], ids[6], ids[7]]}


@pytest.mark.django_db
def test_it_counts_before_it_sends_and_a_different_annotator_gets_only_the_flagged(client, people):
    comparisons = _labelled(people)
    job = _ensemble(people, comparisons)
    url = f"/api/v1/projects/{people.project.pk}/audit/send"
    body = {"ensemble_job_id": job.pk, "flags": ["probably_wrong"]}
    preview = client.post(url, body, content_type="application/json", headers=auth(people.users["bob"]))
    assert preview.status_code == 200, preview.content
    assert (preview.json()["labels"], preview.json()["comparisons"], preview.json()["done"]) == (3, 3, False)
    assert preview.json()["overlap_raised"] == 3
    assert set(Comparison.objects.values_list("overlap", flat=True)) == {1}  # the preview changed nothing
    done = client.post(url, {**body, "confirm": True}, content_type="application/json",
                       headers=auth(people.users["bob"]))
    assert done.json()["done"] is True and done.json()["overlap_raised"] == 3
    flagged = {comparisons[i].pk for i in (1, 4, 6)}
    assert {c.pk for c in Comparison.objects.filter(overlap=2)} == flagged
    # the original annotator is never given them again; another annotator gets exactly those
    nothing = client.post(f"/api/v1/projects/{people.project.pk}/annotation/next", headers=auth(people.users["carol"]))
    assert nothing.status_code == 204
    got = {label_next(people.project, people.users["bob"], "a") for _ in flagged}
    assert got == flagged
    again = client.post(f"/api/v1/projects/{people.project.pk}/annotation/next", headers=auth(people.users["bob"]))
    assert again.status_code == 204


@pytest.mark.django_db
def test_it_refuses_an_ensemble_of_one_and_missing_scores_with_the_field(client, people):
    from webapp.training.models import RewardModel

    comparisons = _labelled(people)
    job = _ensemble(people, comparisons)
    RewardModel.objects.filter(job=job, name="m2").delete()
    from webapp.routing.models import ResponseRewardScore

    ResponseRewardScore.objects.filter(reward_model__name="m1", response_id=comparisons[0].response_ids[0]).delete()
    r = client.get(f"/api/v1/projects/{people.project.pk}/audit?ensemble_job_id={job.pk}",
                   headers=auth(people.users["bob"]))
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "ensemble_job_id" and "m1 (1 of 16 responses)" in r.json()["detail"][0]["message"]
    RewardModel.objects.filter(job=job, name="m1").delete()
    r = client.get(f"/api/v1/projects/{people.project.pk}/audit?ensemble_job_id={job.pk}",
                   headers=auth(people.users["bob"]))
    assert r.status_code == 422 and "ensemble of one (m0)" in r.json()["detail"][0]["message"]


@pytest.mark.django_db
def test_it_gives_each_judge_template_version_its_agreement_with_people(client, people):
    """v1 agrees with carol on 1 of 3 comparisons, v2 on 3 of 3; v3 labelled only what no person did."""
    from tests.webapp.test_gold_items import wilson
    from webapp.annotation.services import lm_label_create
    from webapp.jobs.models import Job
    from webapp.judging.models import JudgePromptTemplate, LMLabelAttempt, LMLabellingRun

    comparisons = pair_project(people, 4)
    for choice in ["a", "a", "b"]:
        label_next(people.project, people.users["carol"], choice)
    plan = {1: (["b", "a", "a"], comparisons[:3]), 2: (["a", "a", "b"], comparisons[:3]), 3: (["a"], comparisons[3:])}
    for version, (choices, targets) in plan.items():
        template = JudgePromptTemplate.objects.create(project=people.project, name="judge", version=version,
                                                      text="Compare", created_by=people.users["alice"])
        job = Job.objects.create(project=people.project, kind="lm_label", created_by=people.users["alice"],
                                 state="succeeded")
        run = LMLabellingRun.objects.create(job=job, project=people.project, template=template,
                                            comparison_ids=[c.pk for c in targets])
        for comparison, choice in zip(targets, choices):
            label = lm_label_create(comparison=comparison, choice=choice, model_version="m", provenance={})
            LMLabelAttempt.objects.create(run=run, comparison=comparison, status="labelled", label=label)
    r = client.get(f"/api/v1/projects/{people.project.pk}/agreement/judge-templates", headers=auth(people.users["dave"]))
    assert r.status_code == 200, r.content
    got = {v["template"]: v for v in r.json()}
    assert (got["judge@1"]["n_pairs"], got["judge@1"]["n_agree"]) == (3, 1)
    assert (got["judge@1"]["ci_low"], got["judge@1"]["ci_high"]) == pytest.approx(wilson(1, 3))
    assert (got["judge@2"]["n_pairs"], got["judge@2"]["agreement"]) == (3, 1.0)
    assert got["judge@3"]["agreement"] is None and "shares a comparison with a human label" in got["judge@3"]["message"]
    client.force_login(people.users["dave"])  # the raters page shows the same table (judging's inclusion tag)
    page = client.get(f"/projects/{people.project.pk}/quality/").content.decode()
    assert '<tr data-template="judge@1"><td>judge@1</td><td>3</td><td>3</td><td>3</td><td>1</td>' in page
    assert got["judge@3"]["message"] in page


# ------------------------------------------------------------------ pages, adaptive margin export, UserError as 422


@pytest.mark.django_db
def test_its_audit_page_shows_the_flagged_labels_with_counts_and_sends_them_only_after_confirming(client, people):
    comparisons = _labelled(people)
    job = _ensemble(people, comparisons)
    url = f"/projects/{people.project.pk}/quality/audit/"
    client.force_login(people.users["bob"])
    page = client.get(url, {"ensemble_job_id": job.pk}).content.decode()
    ids = [comparisons[i].pk for i in (1, 4, 6, 7)]
    for cid in ids:
        assert f'data-comparison="{cid}"' in page
    assert 'data-count="probably_wrong">3<' in page and 'data-count="ambiguous">1<' in page
    assert "Send 4 comparisons back for adjudication" in page
    first = client.post(url, {"ensemble_job_id": job.pk, "flags": ["probably_wrong", "ambiguous"]}).content.decode()
    assert 'data-count="comparisons">4<' in first and 'data-count="labels">4<' in first
    assert set(Comparison.objects.values_list("overlap", flat=True)) == {1}  # the first step changed nothing
    done = client.post(url, {"ensemble_job_id": job.pk, "flags": ["probably_wrong", "ambiguous"], "confirm": "1"})
    assert done.status_code == 302
    assert {c.pk for c in Comparison.objects.filter(overlap=2)} == set(ids)


@pytest.mark.django_db
def test_its_audit_page_offers_the_send_only_to_designers_and_names_a_bad_field(client, people):
    comparisons = _labelled(people)
    job = _ensemble(people, comparisons)
    url = f"/projects/{people.project.pk}/quality/audit/"
    client.force_login(people.users["dave"])  # viewer: sees the audit, cannot send
    page = client.get(url, {"ensemble_job_id": job.pk}).content.decode()
    assert 'data-count="probably_wrong">3<' in page and "back for adjudication" not in page
    assert client.post(url, {"ensemble_job_id": job.pk, "confirm": "1"}).status_code == 403
    assert set(Comparison.objects.values_list("overlap", flat=True)) == {1}
    bad = client.get(url, {"ensemble_job_id": job.pk, "z": "wide"})
    assert bad.status_code == 422 and "z: &#x27;wide&#x27; is not a number." in bad.content.decode()
    client.force_login(people.users["carol"])  # annotator: no dashboards
    assert client.get(url, {"ensemble_job_id": job.pk}).status_code == 403
    client.force_login(people.users["dave"])
    agreement = client.get(f"/projects/{people.project.pk}/agreement/").content.decode()
    assert url in agreement and "Adjudicate disagreements" not in agreement


@pytest.mark.django_db
def test_it_exports_the_ensemble_mean_as_the_margin_and_counts_rows_without_a_score(client, people):
    import json

    comparisons = _labelled(people)
    job = _ensemble(people, comparisons)
    tie = pair_project(people, 1)[-1]  # a ninth comparison, scored by no member: its tie gives a row with no mu
    label_next(people.project, people.users["carol"], "tie")
    from webapp.routing.models import ResponseRewardScore
    from webapp.training.models import RewardModel

    for model in RewardModel.objects.filter(job=job):  # scores for the tie's responses, so the audit can run
        for r in tie.response_ids:
            ResponseRewardScore.objects.create(response_id=r, reward_model=model, score=0.0)
    r = client.get(f"/api/v1/projects/{people.project.pk}/export?margin=ensemble&ensemble_job_id={job.pk}"
                   "&tie_policy=keep", headers=auth(people.users["dave"]))
    assert r.status_code == 200, r.content
    rows = [json.loads(line) for line in b"".join(r.streaming_content).decode().splitlines()]
    assert r.headers["X-Rows-Without-Ensemble-Score"] == "1" and r.headers["X-Rows-Out"] == "9"
    assert "3 members" in r.headers["X-Margin"]
    by_comparison = {row["comparison_id"]: row for row in rows}
    for i, (c, choice) in enumerate(zip(comparisons, CAROL)):
        diffs = [(s[i][0] - s[i][1]) * (1 if choice == "a" else -1) for s in SCORES.values()]
        assert by_comparison[str(c.pk)]["margin"] == pytest.approx(statistics.mean(diffs))
    assert by_comparison[str(tie.pk)]["margin"] == 0 and by_comparison[str(tie.pk)]["tie"] is True
    missing = client.get(f"/api/v1/projects/{people.project.pk}/export?margin=ensemble",
                         headers=auth(people.users["dave"]))
    assert missing.status_code == 422 and missing.json()["detail"][0]["field"] == "ensemble_job_id"


@pytest.mark.django_db
def test_it_answers_an_rlcore_user_error_with_a_422_naming_what_to_fix(client, people):
    """audit/send calls the service directly; rlcore refuses z < 0 with a UserError, which no endpoint catches."""
    comparisons = _labelled(people)
    job = _ensemble(people, comparisons)
    r = client.post(f"/api/v1/projects/{people.project.pk}/audit/send", {"ensemble_job_id": job.pk, "z": -1},
                    content_type="application/json", headers=auth(people.users["bob"]))
    assert r.status_code == 422, r.content
    assert r.json()["detail"] == [{"field": "__all__", "message": "z and t must be finite and non-negative (got z=-1.0, t=0.0)"}]


@pytest.mark.django_db
def test_its_adjudication_page_shows_labels_side_by_side_and_records_a_designers_resolution(client, people):
    from tests.webapp.test_adjudication import _disagreeing
    from webapp.annotation.models import PreferenceLabel

    comparisons = _disagreeing(people)
    url = f"/projects/{people.project.pk}/quality/adjudication/"
    client.force_login(people.users["dave"])
    page = client.get(url).content.decode()
    assert "1 comparisons with disagreeing labels" in page and "carol says a" in page and "bob says b" in page
    assert "B is better" not in page  # a viewer sees, cannot resolve
    assert client.post(url, {"comparison_id": comparisons[0].pk, "choice": "b"}).status_code == 403
    client.force_login(people.users["alice"])
    assert client.post(url, {"comparison_id": comparisons[0].pk, "choice": "c"}).status_code == 422
    assert client.post(url, {"comparison_id": comparisons[0].pk, "choice": "b", "rationale": "B is right"}).status_code == 302
    label = PreferenceLabel.objects.get(source="adjudication")
    assert (label.comparison_id, label.choice, label.rationale) == (comparisons[0].pk, "b", "B is right")
    assert "Resolved by alice" in client.get(url).content.decode()


@pytest.mark.django_db
def test_its_raters_page_gives_gold_accuracy_with_its_count_and_interval(client, people):
    """carol labels 3 gold items (answer a): right on 2, so 2/3 with the Wilson interval; Dawid-Skene lists her."""
    from tests.webapp.test_gold_items import wilson

    comparisons = pair_project(people, 3)
    client.force_login(people.users["bob"])
    r = client.post(f"/projects/{people.project.pk}/quality/gold/",
                    {"comparison_id_list": " ".join(str(c.pk) for c in comparisons), "answer": "a",
                     "next": f"/projects/{people.project.pk}/comparisons/"})
    assert r.status_code == 302 and r["Location"] == f"/projects/{people.project.pk}/comparisons/"
    assert set(Comparison.objects.values_list("gold_answer", flat=True)) == {"a"}
    for choice in ["a", "b", "a"]:
        label_next(people.project, people.users["carol"], choice)
    page = client.get(f"/projects/{people.project.pk}/quality/").content.decode()
    low, high = wilson(2, 3)
    assert "3 gold items, 3 of them labelled" in page
    assert (f'<tr data-rater="carol"><td>carol</td><td>3</td><td>2</td><td>0</td>\n    <td>0.667</td>'
            f"<td>{low:.3f} – {high:.3f}</td></tr>") in page
    assert 'id="raters"' in page and '<tr data-rater="carol"><td>carol</td><td>3</td><td>3</td>' in page
    tie = client.post(f"/projects/{people.project.pk}/quality/gold/",
                      {"comparison_id_list": str(comparisons[0].pk), "answer": "tie"}, follow=True)
    assert "cannot be a tie" in tie.content.decode()
