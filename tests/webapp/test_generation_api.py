"""Generation through the REST API and what the pages show of it, against a real worker and the loopback
OpenAI-compatible server: launch (422 naming the body field on bad input), the job page linking the new dataset
version, the dataset page's provenance, re-run of a stopped job, and the list of a prompt set's versions."""

import json
import re

import pytest

from rlcore.judges.testing_server import ChatCompletionsServer, always
from tests.conftest import PASSWORD, token_for, wait_for
from webapp.jobs.models import Job, JobState
from webapp.jobs.services import job_request_cancel
from webapp.training.services import policy_register

pytestmark = pytest.mark.django_db(transaction=True)


def _api(client, user, method, url, body=None):
    return getattr(client, method)(url, body, content_type="application/json",
                                   headers={"Authorization": f"Bearer {token_for(user)}"})


def _prompt_set(people, tmp_path, n):
    from webapp.datasets.services import dataset_create, dataset_import_run

    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(n)))
    dataset = dataset_create(project=people.project, user=people.users["bob"], name="held-out", path=path)
    return dataset_import_run(dataset_id=dataset.pk)


def _finished(job_id, timeout=90):
    """Finished and recorded: job_finished (which records the version) is sent just after the state is saved."""
    from webapp.datasets.models import Dataset

    wait_for(lambda: Job.objects.get(pk=job_id).is_finished, timeout, 0.3, f"job {job_id} to finish")
    wait_for(lambda: Dataset.objects.filter(job_id=job_id).exists(), 30, 0.2, f"job {job_id}'s dataset version")
    return Job.objects.get(pk=job_id)


def test_bad_launch_input_is_refused_naming_the_body_field(client, people, tmp_path):
    prompts = _prompt_set(people, tmp_path, 2)
    hub = policy_register(project=people.project, user=people.users["bob"], source="hub", location="org/tiny")
    url = f"/api/v1/projects/{people.project.pk}/generation"
    bob = people.users["bob"]
    cases = [
        ({"dataset_id": prompts.pk, "policy_ids": [hub.pk], "spec": {"temperature": -1}}, "spec.temperature"),
        ({"dataset_id": prompts.pk, "policy_ids": [hub.pk], "spec": {"output": "/tmp/x"}}, "spec.output"),
        ({"dataset_id": prompts.pk, "policy_ids": [hub.pk + 99]}, "policy_ids"),
        ({"dataset_id": prompts.pk, "policy_ids": []}, "policy_ids"),
        ({"dataset_id": prompts.pk + 99, "policy_ids": [hub.pk]}, "dataset_id"),
        ({"dataset_id": prompts.pk, "policy_ids": [hub.pk], "round": 0}, "round"),
    ]
    for body, field in cases:
        r = _api(client, bob, "post", url, body)
        assert r.status_code == 422, (body, r.content)
        assert [e["field"] for e in r.json()["detail"]] == [field], (body, r.json())
    # the body's shape is checked before the role (ninja validates it first); a well-formed one meets the role
    assert _api(client, people.users["dave"], "post", url, {**cases[0][0], "spec": {}}).status_code == 403
    assert not Job.objects.filter(kind="generate").exists()


def test_a_job_launched_through_the_api_writes_a_version_the_pages_show_with_provenance(client, people,
                                                                                        celery_workers, tmp_path):
    bob = people.users["bob"]
    prompts = _prompt_set(people, tmp_path, 12)
    with ChatCompletionsServer(always("an answer"), latency_s=0.3, capacity=1) as server:
        policy = policy_register(project=people.project, user=bob, source="endpoint", name="served",
                                 location="served", endpoint_url=server.base_url, api_key="sk-never-shown")
        r = _api(client, bob, "post", f"/api/v1/projects/{people.project.pk}/generation", {
            "dataset_id": prompts.pk, "policy_ids": [policy.pk], "round": 3,
            "spec": {"batch_size": 1, "temperature": 0.5, "seed": 7}})
        assert r.status_code == 201, r.content
        job_id = r.json()["id"]
        wait_for(lambda: Job.objects.get(pk=job_id).progress_step >= 2, 60, 0.2, "some responses")
        job_request_cancel(job=Job.objects.get(pk=job_id))
        job = _finished(job_id)
        assert job.state == JobState.CANCELLED

        versions = _api(client, people.users["dave"], "get",
                        f"/api/v1/projects/{people.project.pk}/datasets/{prompts.pk}/versions").json()
        assert [(v["version"], v["parent_id"]) for v in versions] == [(1, None), (2, prompts.pk)]
        partial = versions[1]
        assert partial["partial"] and 2 <= partial["response_count"] < 12 and partial["job_id"] == job_id
        assert partial["generation"]["round"] == 3 and partial["generation"]["policy_ids"] == [policy.pk]

        assert client.login(username="bob", password=PASSWORD)
        fragment = client.get(f"/projects/{people.project.pk}/training/generate/{job_id}/").content.decode()
        assert f'href="/projects/{people.project.pk}/datasets/{partial["id"]}/"' in fragment
        assert "partial" in fragment and "Generate what is missing" in fragment
        page = client.get(f"/projects/{people.project.pk}/datasets/{partial['id']}/").content.decode()
        assert f"{partial['response_count']} of 12 responses" in page and "Partial:" in page
        row = re.search(r"<tr><td>served</td>.*?</tr>", page, re.S).group(0)
        assert re.sub(r"\s+", " ", row).startswith("<tr><td>served</td><td>—</td> <td>3</td><td>"), row
        assert "<code>temperature</code> 0.5" in page and "<code>seed</code> 7" in page

        again = _api(client, bob, "post", f"/api/v1/projects/{people.project.pk}/generation/{job_id}/rerun")
        assert again.status_code == 201, again.content
        rerun = _finished(again.json()["id"])
        assert rerun.state == JobState.SUCCEEDED, rerun.error
    versions = _api(client, bob, "get", f"/api/v1/projects/{people.project.pk}/datasets/{partial['id']}/versions").json()
    assert len(versions) == 2 and versions[1]["response_count"] == 12 and not versions[1]["partial"]
    page = client.get(f"/projects/{people.project.pk}/datasets/{partial['id']}/").content.decode()
    assert "Complete: 12 of 12 responses" in page
    from webapp.datasets.models import Response

    keys = set(Response.objects.filter(prompt__dataset_id=partial["id"]).values_list("generation_key", flat=True))
    assert len(keys) == 1 and len(keys.pop()) == 32  # the policy + sampling hash, never the endpoint's key
    assert "sk-never-shown" not in open(f"{job.output_dir}/responses.jsonl").read()
