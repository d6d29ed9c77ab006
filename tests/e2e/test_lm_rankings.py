"""LM ranking of N-way comparisons end to end, over real HTTP against real Celery workers and a real
loopback OpenAI-compatible judge: the designer asks a judge to rank the project's rankings still
without a label; the job ranks each as given and reversed and records LM labels with both orders;
a ranking the judge cannot give goes back to people with the reason; nothing is ever invented."""

import json
from pathlib import Path

import httpx
import pytest

from rlcore.judges.testing_server import ChatCompletionsServer, ScriptedReply, ranks_by_keyword
from tests.conftest import token_for, wait_for
from tests.webapp.ranking_helpers import politeness_rubric, ranking_rows, rankings_dataset
from webapp.annotation.models import Comparison, LabelSource, PreferenceLabel
from webapp.jobs.models import Job, JobState
from webapp.judging.models import LMLabelAttempt, LMLabellingRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]
SECRET = "sk-e2e-rank-key-0a1b2c3d4e5f"


_by_keyword = ranks_by_keyword("thanks")


def judge_policy(body):
    """Ranks by "thanks" (both orders agree); refuses REFUSE prompts; for POSITION prompts always puts
    whatever is shown first on top (the two orders disagree)."""
    text = body["messages"][-1]["content"]
    if "REFUSE" in text:
        return ScriptedReply(content=None, refusal="I can't rank that.")
    if "POSITION" in text:
        return ScriptedReply(content="Ranking: 1 > 2 > 3")
    return _by_keyword(body)


def client_for(app_server, people, user):
    return httpx.Client(base_url=f"{app_server}/api/v1/projects/{people.project.pk}",
                        headers={"Authorization": f"Bearer {token_for(people.users[user])}"}, timeout=60)


def test_it_ranks_the_waiting_rankings_in_both_orders_and_gives_the_rest_to_people(app_server, people,
                                                                                   celery_workers):
    rankings_dataset(project=people.project, user=people.users["alice"], rows=ranking_rows())
    comparisons = {c.pk: c for c in Comparison.objects.filter(project=people.project)}
    assert len(comparisons) == 7 and {c.kind for c in comparisons.values()} == {"ranking"}
    with client_for(app_server, people, "bob") as bob, client_for(app_server, people, "carol") as carol:
        # Carol ranks one comparison and holds another: neither goes to the judge.
        first = carol.post("/annotation/next").json()
        ids = [r["response_id"] for r in first["responses"]]
        assert carol.post("/annotation/labels", json={"assignment_id": first["assignment_id"],
                                                      "ranking": ids}).status_code == 201
        held = carol.post("/annotation/next").json()

        with ChatCompletionsServer(judge_policy, api_key=SECRET) as server:
            judge = bob.post("/judges", json={"name": "loopback", "endpoint": server.base_url, "model": "judge-r",
                                              "api_key": SECRET, "max_concurrency": 4, "timeout_s": 10}).json()
            started = bob.post(f"/judges/{judge['id']}/label-rankings", json={})
            assert started.status_code == 201, started.text
            body = started.json()
            wanted = set(comparisons) - {first["comparison_id"], held["comparison_id"]}
            assert body["mode"] == "ranking" and set(body["comparison_ids"]) == wanted
            # Out of the annotation queue while the judge works.
            assert not Comparison.objects.filter(pk__in=wanted, is_active=True).exists()
            run = wait_for(lambda: LMLabellingRun.objects.filter(job_id=body["job_id"], finished=True).first(),
                           90, 0.5, "the ranking run to be recorded")
            assert server.stats.authorization_failures == 0 and server.stats.requests == 2 * len(wanted)

        job = Job.objects.get(pk=body["job_id"])
        assert job.state == JobState.SUCCEEDED, job.error
        assert job.argv[:2] == ["judge", "rank"] and job.kind == "judge_labels"
        refused = next(pk for pk, c in comparisons.items() if c.prompt.text.startswith("REFUSE"))
        position = next(pk for pk, c in comparisons.items() if c.prompt.text.startswith("POSITION"))
        labels = {lab.comparison_id: lab for lab in PreferenceLabel.objects.filter(source=LabelSource.LM)}
        assert set(labels) == wanted - {refused} and (run.n_labelled, run.n_failed) == (len(wanted) - 1, 1)
        for cid, label in labels.items():
            prov, comparison = label.provenance, comparisons[cid]
            assert label.choice == "ranking" and label.annotator is None and label.model_version == "judge-r"
            assert prov["mode"] == "ranking" and prov["template"] == "default-rank@1" and prov["job_id"] == job.pk
            given, backward = prov["orders"]["given"], prov["orders"]["reversed"]
            assert given["rendered_prompt"] != backward["rendered_prompt"]
            assert given["raw_reply"].startswith("Ranking:") and backward["raw_reply"].startswith("Ranking:")
            if cid == position:  # shown-first always wins: the orders disagree, marked as position bias
                assert label.ranking == comparison.response_ids
                assert prov["forward_verdict"] == comparison.response_ids
                assert prov["reversed_verdict"] == comparison.response_ids[::-1]
                assert prov["position_bias"] is True and prov["confidence"] == 0.0
            else:
                texts = {r.pk: r.text for r in comparison.responses()}
                best_first = sorted(comparison.response_ids, key=lambda rid: -texts[rid].count("thanks"))
                assert label.ranking == best_first
                assert prov["forward_verdict"] == prov["reversed_verdict"] == best_first
                assert prov["position_bias"] is False and prov["confidence"] == 1.0

        # The refused ranking: no label, the reason recorded, back in the queue for people.
        attempt = LMLabelAttempt.objects.get(comparison_id=refused)
        assert attempt.status == "failed" and "judge refused: I can't rank that." in attempt.reason
        assert not PreferenceLabel.objects.filter(comparison_id=refused).exists()
        assert Comparison.objects.get(pk=refused).is_active
        # Nothing is left for a judge (the refused one is people's now): a second start says so, and queues nothing.
        again = bob.post(f"/judges/{judge['id']}/label-rankings")
        assert again.status_code == 422 and "waiting for a label" in again.text
        assert LMLabellingRun.objects.count() == 1

        assert carol.post("/annotation/skip", json={"assignment_id": held["assignment_id"]}).status_code == 204
        assert carol.post("/annotation/next").json()["comparison_id"] == refused

        leaks = [json.dumps(job.argv), json.dumps(job.spec), job.log_tail, job.error or ""]
        leaks += [p.read_text(errors="replace") for p in Path(job.output_dir).iterdir()]
        assert not any(SECRET in text for text in leaks)


def test_it_also_grades_each_response_on_the_annotation_rubric_when_asked(app_server, people, celery_workers):
    rankings_dataset(project=people.project, user=people.users["alice"], rows=ranking_rows()[:2])
    version = politeness_rubric(project=people.project, user=people.users["alice"])

    def policy(body):
        text = body["messages"][-1]["content"]
        if "Criterion: polite" in text:
            response = text.split("Response:\n", 1)[1].split("\n\nReference answer", 1)[0]
            return ScriptedReply(content=f"Score: {1 + response.count('thanks')}")
        return _by_keyword(body)

    with client_for(app_server, people, "bob") as bob, ChatCompletionsServer(policy) as server:
        judge = bob.post("/judges", json={"name": "grader", "endpoint": server.base_url, "model": "judge-g"}).json()
        started = bob.post(f"/judges/{judge['id']}/label-rankings", json={"grade_rubric": True})
        assert started.status_code == 201, started.text
        wait_for(lambda: LMLabellingRun.objects.filter(job_id=started.json()["job_id"], finished=True).first(),
                 90, 0.5, "the graded ranking run to be recorded")
        assert server.stats.requests == 2 * 2 + 2 * 3  # both orders per ranking, one grade per response

    labels = PreferenceLabel.objects.filter(source=LabelSource.LM).select_related("comparison")
    assert labels.count() == 2
    for label in labels:
        texts = {str(r.pk): r.text for r in label.comparison.responses()}
        assert label.criterion_scores == {rid: {"polite": float(1 + text.count("thanks"))}
                                          for rid, text in texts.items()}
        assert label.rubric_version == version and label.choice == "ranking"
        assert all(grade["polite"]["raw_reply"].startswith("Score:") for grade in label.provenance["criteria"].values())
