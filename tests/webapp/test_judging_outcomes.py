"""What an LM labelling run's labels are worth, through a real Celery worker and a real loopback
judge: every comparison's outcome is stored, and the Judges page, the run page and the API show usable
verdicts, order disagreements (recorded as ties), genuine ties, refusals and unparseable replies, the
counts matching a hand count of the replies the server sent, with a warning when most contradict."""

import pytest

from rlcore.judges.testing_server import ChatCompletionsServer
from tests.conftest import wait_for
from tests.rlcore.test_judge_outcomes import Recorder, hand_count, mixed_judge, mixed_rows
from tests.webapp.routing_helpers import pairs_dataset
from tests.webapp.test_judging import Api
from webapp.annotation.models import Comparison, PreferenceLabel
from webapp.jobs.models import JobState
from webapp.judging.models import LMLabelAttempt, LMLabellingRun
from webapp.judging.configs import judge_config_create
from webapp.judging.runs import lm_labelling_job_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def _run_judge(people, kinds):
    pairs_dataset(project=people.project, user=people.users["alice"], rows=mixed_rows(kinds))
    comparisons = list(Comparison.objects.filter(project=people.project).order_by("id"))
    recorder = Recorder(mixed_judge)
    with ChatCompletionsServer(recorder) as server:
        config = judge_config_create(project=people.project, user=people.users["bob"], name="loopback",
                                     model="judge-1", endpoint=server.base_url, max_concurrency=4, max_retries=0)
        job = lm_labelling_job_create(project=people.project, user=people.users["bob"], config=config,
                                      comparison_ids=[c.pk for c in comparisons])
        run = wait_for(lambda: LMLabellingRun.objects.filter(job=job, finished=True).first(), 90, 0.5,
                       "the labelling run to be recorded")
    run.job.refresh_from_db()
    assert run.job.state == JobState.SUCCEEDED, run.job.error
    pairs = []
    for c in comparisons:
        a, b = c.responses()
        pairs.append((c.prompt.text, a.text, b.text))
    return run, hand_count(recorder.served, pairs)


def test_it_shows_what_the_labels_are_worth_and_warns_about_a_position_biased_judge(client, people,
                                                                                    celery_workers):
    kinds = {"POSITION": 8, "SECOND": 1, "HALF": 1, "KEYWORD": 2, "TIE": 1, "REFUSE": 1, "GARBLE": 1}
    run, expected = _run_judge(people, kinds)
    assert expected == {"disagree_first": 8, "disagree_second": 1, "disagree_tie": 1, "verdict": 2, "tie": 1,
                        "refused": 1, "unparseable": 1}
    stored: dict[str, int] = {}
    for outcome in LMLabelAttempt.objects.filter(run=run).values_list("outcome", flat=True):
        stored[outcome] = stored.get(outcome, 0) + 1
    assert stored == expected
    # The disagreements were stored as tie labels (that is what "recorded as ties" says): 13 labels in all.
    assert (run.n_labelled, run.n_failed) == (13, 2)
    assert PreferenceLabel.objects.filter(choice="tie", provenance__position_bias=True).count() == 10

    api = Api(client, people.users["dave"], people.project.pk)  # a viewer may read it
    body = api.get(f"/judge-runs/{run.job_id}").json()
    summary = body["summary"]
    assert (summary["usable"], summary["order_disagreements"], summary["genuine_ties"]) == (2, 10, 1)
    assert (summary["refused"], summary["unparseable"], summary["call_failed"], summary["not_judged"]) == (1, 1, 0, 0)
    assert summary["answered"] == 13 and summary["contradictory_share"] == pytest.approx(10 / 13)
    assert "recorded as ties" in summary["disagreements_become"]
    assert summary["warning"] and "in 10 of 13 comparisons" in summary["warning"]
    assert "shown first (8 of 9 opposite picks): position bias" in summary["warning"]
    assert [r["job_id"] for r in api.get("/judge-runs").json()] == [run.job_id]

    client.force_login(people.users["dave"])
    home = client.get(f"/projects/{people.project.pk}/judging/").content.decode()
    assert f'data-run="{run.job_id}"' in home
    assert '<td data-outcome="usable">2</td>' in home and '<td data-outcome="genuine_ties">1</td>' in home
    assert '<td data-outcome="order_disagreements">10' in home and "recorded as ties" in home
    assert 'class="error judge-warning" role="alert"' in home and "contradict themselves" in home
    page = client.get(f"/projects/{people.project.pk}/judging/runs/{run.job_id}/").content.decode()
    assert 'role="alert"' in page and "in 10 of 13 comparisons" in page
    assert '<td data-outcome="usable">2</td>' in page and '<td data-outcome="refused">1</td>' in page
    assert page.count('<tr data-outcome="disagree_first">') == 8 and "judge refused: I can&#x27;t judge that." in page
    job_page = client.get(f"/projects/{people.project.pk}/jobs/{run.job_id}/").content.decode()
    assert f'hx-get="/projects/{people.project.pk}/judging/runs/{run.job_id}/?part=summary"' in job_page
    summary_part = client.get(f"/projects/{people.project.pk}/judging/runs/{run.job_id}/?part=summary").content.decode()
    assert "in 10 of 13 comparisons" in summary_part and "<html" not in summary_part


def test_it_does_not_warn_when_the_judge_is_consistent(client, people, celery_workers):
    run, expected = _run_judge(people, {"KEYWORD": 4, "TIE": 1, "POSITION": 1, "REFUSE": 2})
    assert expected == {"verdict": 4, "tie": 1, "disagree_first": 1, "refused": 2}
    summary = Api(client, people.users["bob"], people.project.pk).get(f"/judge-runs/{run.job_id}").json()["summary"]
    assert (summary["usable"], summary["order_disagreements"], summary["refused"]) == (4, 1, 2)
    assert summary["warning"] is None
    client.force_login(people.users["bob"])
    assert "judge-warning" not in client.get(f"/projects/{people.project.pk}/judging/").content.decode()
