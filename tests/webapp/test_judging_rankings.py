"""LM ranking of N-way comparisons, without workers: who may start it, what it refuses, which
comparisons it takes, the Judges page action, and how a ranking line becomes an LM label (or not)."""

import json
from pathlib import Path

import pytest

from tests.conftest import PASSWORD
from tests.webapp.ranking_helpers import ranking_rows, rankings_dataset
from tests.webapp.test_judging import Api
from webapp.annotation.models import Comparison, PreferenceLabel
from webapp.jobs.models import Job
from webapp.judging.models import JudgeConfig, LMLabelAttempt, LMLabellingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def ranked(people):
    rankings_dataset(project=people.project, user=people.users["alice"], rows=ranking_rows())
    config = JudgeConfig.objects.create(project=people.project, name="j", model="judge-m",
                                        endpoint="http://127.0.0.1:9/v1", created_by=people.users["bob"])
    return config, list(Comparison.objects.filter(project=people.project).order_by("id"))


@pytest.mark.parametrize("role,status", [("annotator", 403), ("viewer", 403), ("outsider", 404)])
def test_it_lets_only_designers_start_lm_rankings(client, people, ranked, role, status):
    config, _ = ranked
    api = Api(client, people.by_role[role], people.project.pk)
    assert api.post(f"/judges/{config.pk}/label-rankings").status_code == status
    client.login(username=people.by_role[role].username, password=PASSWORD)
    assert client.post(f"/projects/{people.project.pk}/judging/rankings/label/",
                       {"judge_config": config.pk}).status_code == status
    assert not Job.objects.exists()


def test_it_rejects_a_template_that_is_not_a_rank_template_of_the_project(client, people, ranked):
    config, comparisons = ranked
    api = Api(client, people.users["bob"], people.project.pk)
    compare = api.post("/judge-templates", {"name": "cmp", "text": "{response_a} {response_b}"}).json()
    for template_id in (compare["id"], 99999):
        response = api.post(f"/judges/{config.pk}/label-rankings", {"template_id": template_id})
        assert response.status_code == 422
        assert response.json()["detail"][0]["field"] == "template_id"
        assert "not a ranking (rank) template" in response.json()["detail"][0]["message"]
    assert api.post("/judges/99999/label-rankings").status_code == 404
    assert not Job.objects.exists() and all(c.is_active for c in Comparison.objects.all())


def test_it_queues_the_waiting_rankings_with_the_chosen_rank_template(client, people, ranked):
    config, comparisons = ranked
    api = Api(client, people.users["bob"], people.project.pk)
    template = api.post("/judge-templates", {"name": "strict-rank", "mode": "rank",
                                             "text": "Rank {n}: {prompt}\n{responses}\nRanking:"}).json()
    response = api.post(f"/judges/{config.pk}/label-rankings", {"template_id": template["id"]})
    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["job_id"])
    assert response.json()["comparison_ids"] == [c.pk for c in comparisons]
    assert job.argv[:2] == ["judge", "rank"] and "--templates" in job.argv
    assert job.argv[job.argv.index("--model") + 1] == "judge-m"
    assert job.spec["mode"] == "ranking" and job.spec["template"] == "strict-rank@1"
    folder = Path(job.output_dir)
    lines = [json.loads(line) for line in (folder / "rankings.jsonl").read_text().splitlines()]
    first = comparisons[0]
    assert lines[0] == {"id": str(first.pk), "prompt": first.prompt.text,
                        "responses": [r.text for r in first.responses()]}
    assert json.loads((folder / "templates.json").read_text())["rank"]["name"] == "strict-rank"
    # Taken out of the annotation queue; a second start finds nothing and says why.
    assert not Comparison.objects.filter(is_active=True).exists()
    again = api.post(f"/judges/{config.pk}/label-rankings")
    assert again.status_code == 422 and "waiting for a label" in again.json()["detail"][0]["message"]


def test_it_offers_the_action_on_the_judges_page(client, people, ranked):
    config, comparisons = ranked
    client.login(username="bob", password=PASSWORD)
    page = client.get(f"/projects/{people.project.pk}/judging/").content.decode()
    assert 'id="rank-form"' in page and "<strong>7</strong> N-way ranking comparisons waiting" in page
    response = client.post(f"/projects/{people.project.pk}/judging/rankings/label/",
                           {"judge_config": config.pk, "template": ""}, follow=True)
    page = response.content.decode()
    run = LMLabellingRun.objects.get()
    assert run.mode == "ranking" and len(run.comparison_ids) == 7
    assert f"Job {run.job_id} ranks 7 comparisons with &#x27;j&#x27;" in page
    assert "<strong>0</strong> N-way ranking comparisons waiting" in page and 'id="rank-form"' not in page
    missing = client.post(f"/projects/{people.project.pk}/judging/rankings/label/", {"judge_config": "x"},
                          follow=True)
    assert "Choose the judge that ranks the comparisons." in missing.content.decode()
    client.login(username="dave", password=PASSWORD)
    assert 'id="rank-form"' not in client.get(f"/projects/{people.project.pk}/judging/").content.decode()


def test_it_records_a_ranking_as_response_ids_and_never_a_ranking_that_does_not_fit(people, ranked):
    from rlcore.judges.base import RankingResult
    from rlcore.judges.debias import combine_rankings
    from webapp.judging.lm_labels import lm_labels_record
    from webapp.judging.runs import lm_rankings_label

    config, comparisons = ranked
    job = lm_rankings_label(project=people.project, user=people.users["bob"], config=config)
    Job.objects.filter(pk=job.pk).update(state="running")

    def line(cid, forward, backward):
        def r(order):
            return RankingResult(request_id=str(cid), judge="j", rendered_prompt=f"prompt {cid}",
                                 raw_reply=f"Ranking: {order}", verdict=order)
        return combine_rankings(str(cid), r(forward), r(backward)).model_dump_json() + "\n"

    good, short = comparisons[0], comparisons[1]
    labels = Path(job.output_dir) / "labels.jsonl"
    labels.write_text(line(good.pk, [2, 0, 1], [0, 2, 1])  # the reversed list: its index 0 is response 2
                      + line(short.pk, [1, 0], [1, 0]))  # two of three responses: not this comparison's ranking
    lm_labels_record(job=job)
    label = PreferenceLabel.objects.get()
    ids = good.response_ids
    assert label.comparison_id == good.pk and label.choice == "ranking" and label.ranking == [ids[2], ids[0], ids[1]]
    assert label.provenance["forward_verdict"] == label.provenance["reversed_verdict"] == label.ranking
    assert label.provenance["orders"]["reversed"]["raw_reply"] == "Ranking: [0, 2, 1]"
    failed = LMLabelAttempt.objects.get(comparison=short)
    assert failed.status == "failed" and "does not fit the comparison" in failed.reason
    assert Comparison.objects.get(pk=short.pk).is_active  # back to people at once
    assert not Comparison.objects.get(pk=good.pk).is_active

    Job.objects.filter(pk=job.pk).update(state="cancelled")
    run = lm_labels_record(job=job)
    assert run.finished and (run.n_labelled, run.n_failed) == (1, 6)
    assert set(Comparison.objects.filter(is_active=True).values_list("pk", flat=True)) == \
        {c.pk for c in comparisons[1:]}


def test_it_asks_for_rubric_grades_only_when_the_project_has_an_annotation_rubric(client, people, ranked):
    from tests.webapp.ranking_helpers import politeness_rubric

    config, comparisons = ranked
    api = Api(client, people.users["bob"], people.project.pk)
    missing = api.post(f"/judges/{config.pk}/label-rankings", {"grade_rubric": True})
    assert missing.status_code == 422 and missing.json()["detail"][0]["field"] == "grade_rubric"
    assert "no annotation rubric" in missing.json()["detail"][0]["message"] and not Job.objects.exists()
    version = politeness_rubric(project=people.project, user=people.users["alice"])
    client.login(username="bob", password=PASSWORD)
    assert "Also grade each response on" in client.get(f"/projects/{people.project.pk}/judging/").content.decode()
    started = api.post(f"/judges/{config.pk}/label-rankings", {"grade_rubric": True})
    assert started.status_code == 201, started.content
    job = Job.objects.get(pk=started.json()["job_id"])
    assert job.argv[-2:] == ["--rubric", "criteria.json"] and job.spec["rubric"] == str(version)
    criteria = json.loads((Path(job.output_dir) / "criteria.json").read_text())
    assert criteria == [{"name": "polite", "description": "is courteous", "scale_min": 1, "scale_max": 3}]
    assert LMLabellingRun.objects.get().rubric_version == version


def test_it_records_the_judges_rubric_grades_by_response_id(people, ranked):
    from rlcore.judges.base import RankingResult
    from rlcore.judges.debias import combine_rankings
    from tests.webapp.ranking_helpers import politeness_rubric
    from webapp.judging.lm_labels import lm_labels_record
    from webapp.judging.runs import lm_rankings_label

    config, comparisons = ranked
    version = politeness_rubric(project=people.project, user=people.users["alice"])
    job = lm_rankings_label(project=people.project, user=people.users["bob"], config=config, grade_rubric=True)
    Job.objects.filter(pk=job.pk).update(state="succeeded")
    comparison = comparisons[0]
    order = RankingResult(request_id=str(comparison.pk), judge="j", rendered_prompt="p",
                          raw_reply="Ranking: 1 > 2 > 3", verdict=[0, 1, 2])
    line = combine_rankings(str(comparison.pk), order, order).model_dump(mode="json")

    def grade(score, error=None):
        return {"polite": {"score": score, "confidence": None, "error": error, "rendered_prompt": "g",
                           "raw_reply": f"Score: {score}"}}

    grades = [grade(3.0), grade(None, "no score found"), grade(1.0)]
    (Path(job.output_dir) / "labels.jsonl").write_text(json.dumps({**line, "criterion_scores": grades}) + "\n")
    lm_labels_record(job=job)
    label = PreferenceLabel.objects.get()
    a, b, c = (str(rid) for rid in comparison.response_ids)
    assert label.criterion_scores == {a: {"polite": 3.0}, c: {"polite": 1.0}}  # never a score it did not give
    assert label.rubric_version == version and label.provenance["rubric"] == str(version)
    assert label.provenance["criteria"][b]["polite"]["error"] == "no score found"
