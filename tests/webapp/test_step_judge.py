"""LM step pre-labels from the Judges page (issue 13), through a real Celery worker and the loopback judge:
every step of every step item graded, stored as lm StepLabels as they arrive, counted per run, and shown in
the step workbench as suggestions."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from rlcore.judges.testing_server import ChatCompletionsServer, ScriptedReply, grades_steps_by_keyword
from tests.conftest import token_for, wait_for
from tests.webapp.test_annotation_api import Api
from webapp.annotation.models import Comparison, StepLabel
from webapp.jobs.models import JobState
from webapp.judging.models import LMLabelAttempt, LMLabellingRun
from webapp.judging.configs import judge_config_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

# Three responses; the judge calls a step bad when it says "oops": item 0 none, item 1 step 2, item 2 unanswerable.
ROWS = [{"prompt": "What is 1 + 1?", "responses": ["Step 1: take 1\nStep 2: add 1\nStep 3: get 2"]},
        {"prompt": "What is 2 + 2?", "responses": ["Step 1: take 2\nStep 2: oops add 3\nStep 3: get 5"]},
        {"prompt": "What is 3 + 3?", "responses": ["Step 1: take 3\nStep 2: MUMBLE\nStep 3: get 6"]}]


def _step_items(client, people):
    content = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    r = client.post(f"/api/v1/projects/{people.project.pk}/datasets",
                    {"file": SimpleUploadedFile("steps.jsonl", content), "step_rule": "step_header"},
                    headers={"Authorization": f"Bearer {token_for(people.users['alice'])}"})
    assert r.status_code == 201, r.content
    api = Api(client, people.users["alice"], people.project.pk)
    assert api.post("/steps/build", {"dataset_id": r.json()["id"], "overlap": 2}).json() == {"created": 3}
    return list(Comparison.objects.filter(project=people.project, kind="steps").order_by("id"))


def _judge(keyword_policy):
    def policy(body):
        if "MUMBLE" in body["messages"][-1]["content"].split("Step 2 of 3:")[-1][:20]:
            return ScriptedReply(content="Hmm, hard to say.")
        return keyword_policy(body)
    return policy


def test_it_prelabels_every_step_item_from_the_judges_page_and_shows_the_grades_as_suggestions(client, people,
                                                                                             celery_workers):
    items = _step_items(client, people)
    project = people.project
    client.force_login(people.users["bob"])  # a designer
    with ChatCompletionsServer(_judge(grades_steps_by_keyword("oops"))) as server:
        config = judge_config_create(project=project, user=people.users["bob"], name="stepper", model="judge-s",
                                     endpoint=server.base_url, max_concurrency=4, max_retries=0)
        home = client.get(f"/projects/{project.pk}/judging/").content.decode()
        assert "<strong>3</strong> step items without an LM pre-label" in home
        assert "Pre-label steps with this judge" in home
        r = client.post(f"/projects/{project.pk}/judging/steps/prelabel/", {"judge_config": config.pk})
        assert r.status_code == 302
        run = wait_for(lambda: LMLabellingRun.objects.filter(project=project, mode="steps", finished=True).first(),
                       90, 0.5, "the step pre-label run to be recorded")
        served = server.stats.requests
    run.job.refresh_from_db()
    assert run.job.state == JobState.SUCCEEDED, run.job.error
    assert served == 9  # one request per step, 3 items x 3 steps
    assert run.job.argv[:2] == ["judge", "steps"] and sorted(run.comparison_ids) == [c.pk for c in items]

    labels = {label.comparison_id: label for label in StepLabel.objects.filter(source="lm")}
    assert set(labels) == {items[0].pk, items[1].pk}  # item 2 had a step with no grade: no pre-label
    assert labels[items[0].pk].grades == [1, 1, 1] and labels[items[0].pk].first_error is None
    assert labels[items[1].pk].grades == [1, -1, 1] and labels[items[1].pk].first_error == 1
    assert labels[items[1].pk].model_version == "judge-s"
    assert labels[items[1].pk].provenance["template"] == "default-steps@1"
    assert labels[items[1].pk].provenance["steps"][1]["raw_reply"] == "Score: -1"
    assert (run.n_labelled, run.n_failed) == (2, 1)
    failed = LMLabelAttempt.objects.get(run=run, status="failed")
    assert failed.comparison_id == items[2].pk and failed.outcome == "unparseable"
    assert failed.reason.startswith("step 2: no score found")
    assert LMLabelAttempt.objects.get(run=run, comparison=items[1]).step_label == labels[items[1].pk]

    home = client.get(f"/projects/{project.pk}/judging/").content.decode()
    assert f'data-run="{run.job_id}"' in home
    assert "<strong>1</strong> step item without an LM pre-label" in home  # the failed one may be tried again
    page = client.get(f"/projects/{project.pk}/judging/runs/{run.job_id}/").content.decode()
    assert '<td data-outcome="usable">2</td>' in page and '<td data-outcome="unparseable">1</td>' in page

    # An annotator sees the judge's grades on the workbench as suggestions to confirm or correct.
    client.force_login(people.users["carol"])
    shown = set()
    for _ in range(3):
        item = Api(client, people.users["carol"], project.pk).post("/annotation/steps/next").json()
        shown.add(item["comparison_id"])
        if item["comparison_id"] == items[1].pk:
            assert item["suggestion"]["grades"] == [1, -1, 1] and item["suggestion"]["model_version"] == "judge-s"
            workbench = client.get(f"/projects/{project.pk}/annotate/steps/").content.decode()
            assert "LM suggestion" in workbench and "by judge-s filled in" in workbench
            assert workbench.count('class="muted wb-step-suggested"') == 3
            break
        assert Api(client, people.users["carol"], project.pk).post(
            "/annotation/steps/labels", {"assignment_id": item["assignment_id"], "grades": [1, 1, 1]}).status_code == 201
    assert items[1].pk in shown


def test_it_refuses_to_start_without_step_items_waiting_and_says_why(client, people):
    config = judge_config_create(project=people.project, user=people.users["bob"], name="stepper", model="m",
                                 endpoint="http://127.0.0.1:9/v1")
    client.force_login(people.users["bob"])
    r = client.post(f"/projects/{people.project.pk}/judging/steps/prelabel/", {"judge_config": config.pk},
                    follow=True)
    assert "No step item of this project is waiting for a pre-label" in r.content.decode()
    assert not LMLabellingRun.objects.exists()


def test_it_lets_only_designers_start_step_prelabels(client, people):
    client.force_login(people.users["carol"])  # an annotator
    assert client.post(f"/projects/{people.project.pk}/judging/steps/prelabel/", {"judge_config": 1}).status_code \
        in (403, 404)
