"""LM judge configs (keys encrypted, never shown), connection tests against a real loopback
OpenAI-compatible server, and versioned prompt templates: pages and REST API."""

import socket

import pytest

from rlcore.judges.testing_server import ChatCompletionsServer, always, prefers_keyword
from tests.conftest import PASSWORD, token_for
from webapp.judging.models import JudgeConfig, JudgePromptTemplate
from webapp.endpoint_keys import decrypt_api_key

SECRET = "sk-test-7f3a9c1e5b2d4f60-very-secret"

pytestmark = pytest.mark.django_db


class Api:
    def __init__(self, client, user, project_id):
        self.client, self.base = client, f"/api/v1/projects/{project_id}"
        self.headers = {"Authorization": f"Bearer {token_for(user)}"}

    def post(self, path, data=None):
        return self.client.post(self.base + path, data or {}, content_type="application/json", headers=self.headers)

    def patch(self, path, data):
        return self.client.patch(self.base + path, data, content_type="application/json", headers=self.headers)

    def get(self, path):
        return self.client.get(self.base + path, headers=self.headers)

    def delete(self, path):
        return self.client.delete(self.base + path, headers=self.headers)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_it_stores_the_api_key_encrypted_uses_it_and_never_shows_it(client, people):
    api = Api(client, people.users["bob"], people.project.pk)
    with ChatCompletionsServer(prefers_keyword("4"), api_key=SECRET) as server:
        created = api.post("/judges", {"name": "gpt", "endpoint": server.base_url, "model": "judge-1",
                                       "api_key": SECRET, "max_concurrency": 4})
        assert created.status_code == 201, created.content
        body = created.json()
        assert body["has_stored_key"] is True and body["key_source"] == "stored (encrypted)"
        config = JudgeConfig.objects.get(pk=body["id"])
        assert SECRET not in config.api_key_encrypted and decrypt_api_key(config.api_key_encrypted) == SECRET
        assert SECRET not in repr(config) and SECRET not in str(config)

        tested = api.post(f"/judges/{config.pk}/test")
        assert tested.status_code == 200 and tested.json()["ok"] is True, tested.content
        assert server.stats.authorization_failures == 0 and server.stats.requests == 1

        client.login(username="bob", password=PASSWORD)
        page_test = client.post(f"/projects/{people.project.pk}/judging/{config.pk}/test/")
        seen = [created.content, tested.content, page_test.content, api.get("/judges").content,
                api.get(f"/judges/{config.pk}").content, api.get("/judge-templates").content,
                client.get(f"/projects/{people.project.pk}/judging/").content,
                client.get(f"/projects/{people.project.pk}/judging/{config.pk}/").content,
                client.get("/api/v1/openapi.json").content]
        assert b'data-ok="true"' in page_test.content
    for content in seen:
        assert SECRET.encode() not in content
        assert config.api_key_encrypted.encode() not in content


def test_it_keeps_the_key_on_edit_unless_a_new_one_is_given_or_it_is_cleared(client, people, settings):
    settings.JUDGE_KEY_ENV_ALLOWLIST = ["JUDGE_KEY"]
    api = Api(client, people.users["bob"], people.project.pk)
    config_id = api.post("/judges", {"name": "j", "endpoint": "http://127.0.0.1:9/v1", "model": "m",
                                     "api_key": SECRET}).json()["id"]
    assert api.patch(f"/judges/{config_id}", {"timeout_s": 5}).json()["has_stored_key"] is True
    assert decrypt_api_key(JudgeConfig.objects.get(pk=config_id).api_key_encrypted) == SECRET
    api.patch(f"/judges/{config_id}", {"api_key": "sk-other"})
    assert decrypt_api_key(JudgeConfig.objects.get(pk=config_id).api_key_encrypted) == "sk-other"
    cleared = api.patch(f"/judges/{config_id}", {"clear_api_key": True, "api_key_env": "JUDGE_KEY"}).json()
    assert cleared["has_stored_key"] is False and cleared["key_source"] == "environment variable JUDGE_KEY"
    # The page's form never renders a stored key back (a password field without a value).
    client.login(username="bob", password=PASSWORD)
    api.patch(f"/judges/{config_id}", {"api_key": SECRET})
    page = client.get(f"/projects/{people.project.pk}/judging/{config_id}/").content.decode()
    assert 'type="password"' in page and SECRET not in page


def test_it_says_what_is_wrong_when_the_endpoint_is_unreachable_or_answers_nonsense(client, people):
    api = Api(client, people.users["bob"], people.project.pk)
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    config_id = api.post("/judges", {"name": "down", "endpoint": url, "model": "m", "timeout_s": 2}).json()["id"]
    result = api.post(f"/judges/{config_id}/test").json()
    assert result["ok"] is False and url in result["message"] and "Could not get a reply" in result["message"]
    client.login(username="bob", password=PASSWORD)
    page = client.post(f"/projects/{people.project.pk}/judging/{config_id}/test/").content.decode()
    assert 'data-ok="false"' in page and url in page

    with ChatCompletionsServer(always("I would rather not say.")) as server:
        api.patch(f"/judges/{config_id}", {"endpoint": server.base_url})
        result = api.post(f"/judges/{config_id}/test").json()
    assert result["ok"] is True and "no verdict" in result["message"] and result["reply"] == "I would rather not say."


def test_it_rejects_bad_judge_settings_naming_each_field(client, people):
    api = Api(client, people.users["bob"], people.project.pk)
    bad = api.post("/judges", {"name": "x", "endpoint": "ftp://host", "model": "", "max_concurrency": 0,
                               "timeout_s": -1, "api_key_env": "1-BAD"})
    assert bad.status_code == 422
    assert {d["field"] for d in bad.json()["detail"]} == {"endpoint", "model", "max_concurrency", "timeout_s",
                                                           "api_key_env"}
    api.post("/judges", {"name": "x", "endpoint": "http://h/v1", "model": "m"})
    duplicate = api.post("/judges", {"name": "x", "endpoint": "http://h/v1", "model": "m"})
    assert duplicate.status_code == 422 and duplicate.json()["detail"][0]["field"] == "name"
    client.login(username="bob", password=PASSWORD)
    page = client.post(f"/projects/{people.project.pk}/judging/new/",
                       {"name": "y", "backend": "openai", "endpoint": "not a url", "model": "m", "max_concurrency": 8,
                        "timeout_s": 60, "max_retries": 4})
    assert page.status_code == 422 and "http(s) URL" in page.content.decode()
    assert JudgeConfig.objects.filter(project=people.project).count() == 1


def test_it_saves_each_prompt_edit_as_a_new_version_and_names_bad_placeholders(client, people):
    api = Api(client, people.users["bob"], people.project.pk)
    text = "Which is better for {prompt}?\n[Response A]\n{response_a}\n[Response B]\n{response_b}\nVerdict:"
    first = api.post("/judge-templates", {"name": "strict", "text": text})
    assert first.status_code == 201 and first.json()["version"] == 1
    assert api.post("/judge-templates", {"name": "strict", "text": text}).json()["version"] == 1  # unchanged
    second = api.post("/judge-templates", {"name": "strict", "text": text + " A or B."})
    assert second.json()["version"] == 2
    bad = api.post("/judge-templates", {"name": "strict", "text": "Judge {answer} please"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["field"] == "text" and "{answer}" in bad.json()["detail"][0]["message"]
    assert list(JudgePromptTemplate.objects.filter(name="strict").values_list("version", flat=True)) == [2, 1]

    client.login(username="bob", password=PASSWORD)
    page = client.post(f"/projects/{people.project.pk}/judging/templates/strict/",
                       {"name": "strict", "mode": "compare", "text": "{response_a} vs {response_b}, {bogus}"})
    assert page.status_code == 422 and "{bogus}" in page.content.decode()
    saved = client.post(f"/projects/{people.project.pk}/judging/templates/strict/",
                        {"name": "strict", "mode": "compare", "text": "{response_a} vs {response_b}?"})
    assert saved.status_code == 302
    page = client.get(f"/projects/{people.project.pk}/judging/templates/strict/?version=1").content.decode()
    assert "strict@3" in page and "strict@1" in page and "Which is better for {prompt}?" in page


def test_it_removes_a_judge_with_its_key_and_a_template_with_every_version_keeping_their_labels(client, people):
    from webapp.annotation.models import Comparison, PreferenceLabel
    from webapp.annotation.services import comparisons_build, lm_label_create
    from webapp.datasets.models import Dataset, Prompt, Response

    api = Api(client, people.users["bob"], people.project.pk)
    config_id = api.post("/judges", {"name": "gpt", "endpoint": "http://h/v1", "model": "judge-1",
                                     "api_key": SECRET}).json()["id"]
    dataset = Dataset.objects.create(project=people.project, name="d", source_format="jsonl", status="ready",
                                     created_by=people.users["alice"])
    prompt = Prompt.objects.create(dataset=dataset, source_line=1, text="p")
    Response.objects.bulk_create([Response(prompt=prompt, text=t) for t in ("a", "b")])
    comparisons_build(project=people.project, dataset=dataset)
    lm_label_create(comparison=Comparison.objects.select_related("project").get(), choice="a",
                    model_version="judge-1", provenance={"judge_config": "gpt"})

    assert api.delete(f"/judges/{config_id}").status_code == 204
    assert not JudgeConfig.objects.filter(pk=config_id).exists()  # the encrypted key went with it
    assert api.delete(f"/judges/{config_id}").status_code == 404
    assert PreferenceLabel.objects.get().model_version == "judge-1"

    text = "{response_a} or {response_b}?"
    api.post("/judge-templates", {"name": "strict", "text": text})
    api.post("/judge-templates", {"name": "strict", "text": text + " Say A or B."})
    api.post("/judge-templates", {"name": "kind", "text": text})
    assert api.delete("/judge-templates/strict").status_code == 204
    assert list(JudgePromptTemplate.objects.values_list("name", flat=True)) == ["kind"]
    assert api.delete("/judge-templates/strict").status_code == 404

    client.login(username="bob", password=PASSWORD)
    page = client.get(f"/projects/{people.project.pk}/judging/templates/kind/").content.decode()
    assert 'id="delete-template"' in page
    assert client.post(f"/projects/{people.project.pk}/judging/templates/kind/delete/").status_code == 302
    assert not JudgePromptTemplate.objects.exists()
    other = api.post("/judges", {"name": "other", "endpoint": "http://h/v1", "model": "m"}).json()["id"]
    assert 'id="delete-judge"' in client.get(f"/projects/{people.project.pk}/judging/{other}/").content.decode()
    assert client.post(f"/projects/{people.project.pk}/judging/{other}/delete/").status_code == 302
    assert not JudgeConfig.objects.exists()


@pytest.mark.parametrize("role,status", [("annotator", 403), ("viewer", 403), ("outsider", 404)])
def test_it_lets_only_designers_change_judges(client, people, role, status):
    owner = Api(client, people.users["alice"], people.project.pk)
    config_id = owner.post("/judges", {"name": "j", "endpoint": "http://h/v1", "model": "m"}).json()["id"]
    api = Api(client, people.by_role[role], people.project.pk)
    assert api.post("/judges", {"name": "k", "endpoint": "http://h/v1", "model": "m"}).status_code == status
    assert api.post(f"/judges/{config_id}/test").status_code == status
    assert api.post("/judge-templates", {"name": "t", "text": "{response_a}"}).status_code == status
    assert api.delete(f"/judges/{config_id}").status_code == status
    if role == "viewer":
        assert api.get("/judges").status_code == 200
    assert JudgeConfig.objects.filter(pk=config_id).exists()
    client.login(username=people.by_role[role].username, password=PASSWORD)
    assert client.post(f"/projects/{people.project.pk}/judging/new/", {}).status_code == status


def test_it_records_labels_as_the_judge_writes_them_and_never_twice(people):
    from pathlib import Path

    from rlcore.judges.base import PairVerdict
    from rlcore.judges.debias import combine_orders
    from tests.webapp.routing_helpers import keyword_rows, pairs_dataset
    from webapp.annotation.models import Comparison, PreferenceLabel
    from webapp.jobs.models import Job
    from webapp.judging.models import LMLabelAttempt
    from webapp.judging.configs import judge_config_create
    from webapp.judging.lm_labels import lm_labels_record
    from webapp.judging.runs import lm_labelling_job_create

    pairs_dataset(project=people.project, user=people.users["alice"], rows=keyword_rows(3))
    ids = list(Comparison.objects.order_by("id").values_list("pk", flat=True))
    config = judge_config_create(project=people.project, user=people.users["bob"], name="j", model="m",
                                 endpoint="http://127.0.0.1:9/v1")
    job = lm_labelling_job_create(project=people.project, user=people.users["bob"], config=config,
                                  comparison_ids=ids)
    Job.objects.filter(pk=job.pk).update(state="running")

    def line(cid, forward, swapped):
        def v(verdict):
            return PairVerdict(request_id=str(cid), judge="j", rendered_prompt=f"prompt {cid}",
                               raw_reply=f"Verdict: {verdict}" if verdict else "???", verdict=verdict,
                               error=None if verdict else "no verdict found")
        return combine_orders(str(cid), v(forward), v(swapped)).model_dump_json() + "\n"

    labels = Path(job.output_dir) / "labels.jsonl"
    first, second = line(ids[0], "A", "B"), line(ids[1], None, "A")
    labels.write_text(first + second[:20])  # the second line is still being written
    lm_labels_record(job=job)
    assert list(PreferenceLabel.objects.values_list("comparison_id", "choice")) == [(ids[0], "a")]
    with labels.open("a") as handle:
        handle.write(second[20:])
    lm_labels_record(job=job)
    lm_labels_record(job=job)
    failed = LMLabelAttempt.objects.get(comparison_id=ids[1])
    assert failed.status == "failed" and "order A/B: no verdict found" in failed.reason
    assert PreferenceLabel.objects.count() == 1 and LMLabelAttempt.objects.count() == 2
    label = PreferenceLabel.objects.get()
    assert label.source == "lm" and label.provenance["orders"]["ab"]["raw_reply"] == "Verdict: A"
    assert label.provenance["orders"]["ba"]["raw_reply"] == "Verdict: B"  # swapped order, its own labelling
    Job.objects.filter(pk=job.pk).update(state="failed", error="Traceback ...\nMemoryError")
    run = lm_labels_record(job=job)
    assert run.finished and (run.n_labelled, run.n_failed) == (1, 2)
    assert "failed before reaching it: Traceback ...\nMemoryError" in LMLabelAttempt.objects.get(
        comparison_id=ids[2]).reason
