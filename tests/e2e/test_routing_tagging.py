"""LM prompt tags for routing, over real HTTP against a real Celery worker and a real loopback
OpenAI-compatible endpoint: tag the project's prompts -> each gets its category, or none and the
reason -> a new plan has category=<name> features; the Routing page shows the counts; the API key
appears nowhere."""

import json
from pathlib import Path

import httpx
import pytest

from rlcore.judges.testing_server import ChatCompletionsServer, ScriptedReply
from tests.conftest import token_for, wait_for
from tests.webapp.routing_helpers import pairs_dataset
from webapp.jobs.models import Job, JobState
from webapp.routing.models import PromptTag

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]
SECRET = "sk-e2e-tagger-key-1f2e3d4c5b6a"


def tagger(body: dict) -> ScriptedReply:
    """Names a category by a keyword of the user prompt; refuses REFUSE prompts, rambles on RAMBLE ones."""
    prompt = str(body["messages"][-1]["content"]).split("[Prompt]", 1)[1]
    if "REFUSE" in prompt:
        return ScriptedReply(content=None, refusal="I can't help with that.")
    if "RAMBLE" in prompt:
        return ScriptedReply(content="It is hard to say.")
    return ScriptedReply(content="Category: **Math**." if "integral" in prompt else "category: code")


ROWS = [{"prompt": f"Compute the integral {i}", "responses": [f"x^{i}", f"{i} thanks"]} for i in range(3)] + \
       [{"prompt": f"Write a loop {i}", "responses": [f"for {i}", f"while {i} words"]} for i in range(3)] + \
       [{"prompt": "REFUSE me", "responses": ["a", "b"]}, {"prompt": "RAMBLE on", "responses": ["c", "d"]}]


def client_for(app_server, people, name):
    return httpx.Client(base_url=f"{app_server}/api/v1/projects/{people.project.pk}",
                        headers={"Authorization": f"Bearer {token_for(people.users[name])}"}, timeout=60)


@pytest.fixture
def api(app_server, people):
    with client_for(app_server, people, "bob") as client:
        yield client


def test_it_tags_prompts_and_plans_get_category_features(api, app_server, people, celery_workers, client):
    pairs_dataset(project=people.project, user=people.users["alice"], rows=ROWS)
    with ChatCompletionsServer(tagger, api_key=SECRET) as server:
        judge = api.post("/judges", json={"name": "tagger", "endpoint": server.base_url, "model": "tag-1",
                                          "api_key": SECRET, "max_concurrency": 4, "timeout_s": 10}).json()
        response = api.post("/routing/tags", json={"judge_config_id": judge["id"],
                                                   "categories": "Math, code, other"})
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        job = wait_for(lambda: (j := Job.objects.get(pk=job_id)).state in ("succeeded", "failed") and j, 60, 0.3,
                       "the tagging job")
        assert job.state == JobState.SUCCEEDED, job.error
        assert server.stats.requests == 8 and server.stats.authorization_failures == 0

    tags = {t.prompt.text: t for t in PromptTag.objects.select_related("prompt")}
    assert len(tags) == 8
    assert all(tags[f"Compute the integral {i}"].tags == ["math"] for i in range(3))
    assert all(tags[f"Write a loop {i}"].tags == ["code"] for i in range(3))
    assert tags["REFUSE me"].tags == [] and "I can't help with that." in tags["REFUSE me"].reason
    assert tags["RAMBLE on"].tags == [] and "names none of the categories" in tags["RAMBLE on"].reason
    assert tags["RAMBLE on"].raw_reply == "It is hard to say."

    summary = api.get("/routing/tags").json()
    assert summary["counts"] == {"math": 3, "code": 3}
    assert (summary["n_tagged"], summary["n_untagged"], summary["n_not_tagged_yet"]) == (6, 2, 0)
    assert {u["text"] for u in summary["untagged"]} == {"REFUSE me", "RAMBLE on"}

    plan = api.post("/routing/plans", json={"budget": "2", "strategy": "uncertainty"}).json()
    assert {"category=math", "category=code"} <= set(plan["model_info"]["features"])
    assert not any(f.startswith("category=other") for f in plan["model_info"]["features"])

    client.force_login(people.users["dave"])  # a viewer sees the counts, not the form
    page = client.get(f"/projects/{people.project.pk}/routing/").content.decode()
    assert 'id="tag-counts"' in page and "<td>math</td><td>3</td>" in page and "I can&#x27;t help with that." in page
    assert 'id="tag-form"' not in page

    # The key is nowhere: job record, log, API answers, files left in the job folder.
    leaks = [json.dumps(job.argv), json.dumps(job.spec), job.log_tail, job.error, api.get(f"/jobs/{job_id}").text,
             api.get("/routing/tags").text]
    leaks += [p.read_text(errors="replace") for p in Path(job.output_dir).iterdir()]
    assert "--api-key-file" in job.argv and not any(SECRET in text for text in leaks)

    # A re-tag with another list replaces the earlier tags: "math" is no longer a category to choose.
    with ChatCompletionsServer(tagger, api_key=SECRET) as server:
        api.patch(f"/judges/{judge['id']}", json={"endpoint": server.base_url})
        again = api.post("/routing/tags", json={"judge_config_id": judge["id"], "categories": ["code", "writing"]})
        wait_for(lambda: Job.objects.get(pk=again.json()["id"]).state == "succeeded", 60, 0.3, "the second job")
    summary = api.get("/routing/tags").json()
    assert summary["counts"] == {"code": 3} and (summary["n_tagged"], summary["n_untagged"]) == (3, 5)
    assert PromptTag.objects.count() == 8
    assert "names none of the categories (code, writing)" in PromptTag.objects.get(
        prompt__text="Compute the integral 0").reason


def test_it_refuses_bad_tagging_requests_with_the_field_and_checks_roles(api, app_server, people, client):
    pairs_dataset(project=people.project, user=people.users["alice"], rows=ROWS[:2])
    judge = api.post("/judges", json={"name": "t", "endpoint": "http://127.0.0.1:9/v1", "model": "m"}).json()
    cases = [({"judge_config_id": judge["id"], "categories": "math"}, "categories", "at least two"),
             ({"judge_config_id": judge["id"], "categories": ["math", "<b>"]}, "categories", "'<b>' is not"),
             ({"categories": "math,code"}, "judge_config", "Choose the LM"),
             ({"judge_config_id": 999999, "categories": "math,code"}, "judge_config", "No judge config 999999")]
    for body, field, message in cases:
        response = api.post("/routing/tags", json=body)
        assert response.status_code == 422, response.text
        assert any(d["field"] == field and message in d["message"] for d in response.json()["detail"]), response.text
    with client_for(app_server, people, "carol") as carol, client_for(app_server, people, "eve") as eve:
        assert carol.post("/routing/tags", json={"judge_config_id": judge["id"], "categories": "a,b"}).status_code == 403
        assert eve.get("/routing/tags").status_code == 404
    assert not Job.objects.filter(kind="tag_prompts").exists()

    client.force_login(people.users["bob"])
    page = client.post(f"/projects/{people.project.pk}/routing/tags/",
                       {"tag-judge_config": judge["id"], "tag-categories": "math"})
    assert page.status_code == 422 and 'id="error-tag-categories"' in page.content.decode()
    assert not Job.objects.filter(kind="tag_prompts").exists()
    page = client.post(f"/projects/{people.project.pk}/routing/tags/", {
        "tag-judge_config": judge["id"], "tag-categories": "Math, code", "tag-multi_label": "on"})
    job = Job.objects.get(kind="tag_prompts")
    assert page.status_code == 302 and page.url.endswith(f"/jobs/{job.pk}/")
    assert job.spec["categories"] == ["math", "code"] and job.spec["n_prompts"] == 2 and "--multi-label" in job.argv
    assert len((Path(job.output_dir) / "prompts.jsonl").read_text().splitlines()) == 2
