"""The Training page's policy registry: each entry with its source, run/step, spec version and metrics with what
they rest on, a delete that asks first; the "Register a policy" and "Generate responses" forms, refusing bad input
on the field it concerns (422) and writing nothing; the GRPO launch form offering the registry."""

import json
import re

import pytest

from tests.conftest import PASSWORD
from webapp.jobs.models import Job, JobState
from webapp.jobs.services import job_record_events
from webapp.training.models import Policy
from webapp.jobs.kinds import GRPO_KIND
from webapp.training.services import policy_register

pytestmark = pytest.mark.django_db

CAUSAL = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}


def _folder(path, config=CAUSAL):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


def _as(client, name):
    assert client.login(username=name, password=PASSWORD)
    return client


def _prompt_set(people, tmp_path, n=3):
    from webapp.datasets.services import dataset_create, dataset_import_run

    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(n)))
    dataset = dataset_create(project=people.project, user=people.users["bob"], name="held-out", path=path)
    return dataset_import_run(dataset_id=dataset.pk)


def _checkpoint(people, settings):
    job = Job.objects.create(project=people.project, kind=GRPO_KIND, created_by=people.users["bob"],
                             state=JobState.SUCCEEDED, title="GRPO: terse answers")
    out = settings.ARTIFACT_ROOT / "jobs" / f"grpo-{job.pk}"
    job.output_dir = str(out)
    job.spec = {"policy": "/m/start", "prompt_snapshot": str(out / "snapshot" / "prompts.jsonl")}
    job.save()
    _folder(out / "checkpoints" / "checkpoint-2")
    job_record_events(job_id=job.pk, events=[{"kind": "metric", "step": s, "name": "kl", "value": v}
                                             for s, v in ((1, 0.125), (2, 0.25), (3, 0.5))])
    return job


def test_it_lists_each_policy_with_source_run_step_and_metrics_with_what_they_rest_on(client, people, settings):
    job = _checkpoint(people, settings)
    policy = policy_register(project=people.project, user=people.users["bob"], source="checkpoint", job=job, step=2)
    policy_register(project=people.project, user=people.users["bob"], source="hub", location="org/tiny")
    page = _as(client, "dave").get(f"/projects/{people.project.pk}/training/").content.decode()
    row = re.search(rf'<tr data-policy="{policy.pk}">.*?</tr>', page, re.S).group(0)
    assert "Checkpoint of a run" in row and f"run #{job.pk}</a>, step 2" in row
    assert "<code>kl</code> 0.250" in row  # the value at step 2, not the run's last (0.5)
    assert "last value of each logged figure at or before step 2" in row and "snapshot/prompts.jsonl" in row
    assert "org/tiny (hugging face hub id)" in page and "not trained here: no metrics" in page
    assert "data-confirm=" not in row  # a viewer gets no delete button, nor the forms
    assert 'id="policy-register"' not in page and 'id="generate"' not in page
    page = _as(client, "bob").get(f"/projects/{people.project.pk}/training/").content.decode()
    row = re.search(rf'<tr data-policy="{policy.pk}">.*?</tr>', page, re.S).group(0)
    assert 'data-confirm="Remove the policy terse answers @ step 2 from the registry?' in row
    assert 'id="policy-register"' in page and 'id="generate"' in page


def test_it_registers_a_folder_from_the_page_and_refuses_a_non_causal_one_on_its_field(client, people, settings,
                                                                                       tmp_path):
    settings.MODEL_ROOTS = [str(tmp_path)]
    encoder = _folder(tmp_path / "encoder", {"model_type": "bert", "architectures": ["BertModel"]})
    url = f"/projects/{people.project.pk}/training/policies/new/"
    refused = _as(client, "bob").post(url, {"source": "folder", "location": str(encoder)})
    assert refused.status_code == 422 and not Policy.objects.exists()
    error = re.search(r'id="error-location">(.*?)</ul>', refused.content.decode(), re.S).group(1)
    assert "is not a causal language model (BertModel)" in error
    good = _folder(tmp_path / "policy")
    r = client.post(url, {"source": "folder", "location": str(good), "name": "start"})
    assert r.status_code == 302 and r["Location"] == f"/projects/{people.project.pk}/training/"
    policy = Policy.objects.get()
    assert (policy.source, policy.location, policy.name, policy.created_by) == ("folder", str(good), "start",
                                                                                 people.users["bob"])
    endpoint = client.post(url, {"source": "endpoint", "endpoint_url": "localhost:8000", "location": "m"})
    assert endpoint.status_code == 422 and 'id="error-endpoint_url"' in endpoint.content.decode()
    assert Policy.objects.count() == 1


def test_it_deletes_a_policy_from_the_page_keeping_the_row(client, people):
    policy = policy_register(project=people.project, user=people.users["bob"], source="hub", location="org/tiny")
    url = f"/projects/{people.project.pk}/training/policies/{policy.pk}/delete/"
    assert _as(client, "dave").post(url).status_code == 403
    assert _as(client, "bob").get(url).status_code == 405
    assert client.post(url).status_code == 302
    policy.refresh_from_db()
    assert policy.deleted_at is not None
    assert f'data-policy="{policy.pk}"' not in client.get(f"/projects/{people.project.pk}/training/").content.decode()


def test_it_launches_a_generation_job_from_the_form_with_the_sampling_settings(client, people, settings, tmp_path):
    settings.MODEL_ROOTS = [str(tmp_path)]
    local = policy_register(project=people.project, user=people.users["bob"], source="folder",
                            location=str(_folder(tmp_path / "policy")))
    hub = policy_register(project=people.project, user=people.users["bob"], source="hub", location="org/tiny")
    prompts = _prompt_set(people, tmp_path)
    page = _as(client, "bob").get(f"/projects/{people.project.pk}/training/").content.decode()
    assert 'name="samples_per_prompt"' in page and 'name="top_p"' in page and "held-out (3 prompts)" in page
    r = client.post(f"/projects/{people.project.pk}/training/generate/", {
        "dataset": prompts.pk, "policies": [local.pk, hub.pk], "samples_per_prompt": 2, "temperature": 0.7,
        "top_p": 0.9, "max_new_tokens": 16, "seed": 5, "round": 2})
    job = Job.objects.get(kind="generate")
    assert r.status_code == 302 and r["Location"] == f"/projects/{people.project.pk}/jobs/{job.pk}/"
    assert job.queue == "gpu" and sorted(job.spec["policy_ids"]) == [local.pk, hub.pk] and job.spec["round"] == 2
    assert {k: job.spec[k] for k in ("samples_per_prompt", "temperature", "top_p", "max_new_tokens", "seed")} == {
        "samples_per_prompt": 2, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 16, "seed": 5}
    status = client.get(f"/projects/{people.project.pk}/training/generate/{job.pk}/").content.decode()
    assert "become a new version of the prompt set when the job ends" in status


def test_it_refuses_bad_sampling_settings_on_their_field_and_queues_nothing(client, people, settings, tmp_path):
    settings.MODEL_ROOTS = [str(tmp_path)]
    local = policy_register(project=people.project, user=people.users["bob"], source="folder",
                            location=str(_folder(tmp_path / "policy")))
    prompts = _prompt_set(people, tmp_path)
    url = f"/projects/{people.project.pk}/training/generate/"
    r = _as(client, "bob").post(url, {"dataset": prompts.pk, "policies": [local.pk], "top_p": 1.5})
    assert r.status_code == 422
    assert "less than or equal to 1" in re.search(r'id="error-top_p">(.*?)</ul>', r.content.decode(), re.S).group(1)
    none = client.post(url, {"dataset": prompts.pk})
    assert none.status_code == 422 and 'id="error-policies"' in none.content.decode()
    (tmp_path / "policy" / "config.json").unlink()  # deleted from disk after registering
    gone = client.post(url, {"dataset": prompts.pk, "policies": [local.pk]})
    assert gone.status_code == 422 and "is no longer on disk" in gone.content.decode()
    assert not Job.objects.filter(kind="generate").exists()


def test_the_grpo_launch_form_offers_registered_checkpoints_folders_and_hub_ids_not_endpoints(client, people,
                                                                                            settings, tmp_path):
    settings.MODEL_ROOTS = [str(tmp_path)]
    job = _checkpoint(people, settings)
    bob = people.users["bob"]
    checkpoint = policy_register(project=people.project, user=bob, source="checkpoint", job=job, step=2)
    folder = policy_register(project=people.project, user=bob, source="folder", name="sft",
                             location=str(_folder(tmp_path / "sft")))
    policy_register(project=people.project, user=bob, source="hub", location="org/tiny")
    policy_register(project=people.project, user=bob, source="endpoint", location="served-model",
                    endpoint_url="http://127.0.0.1:9/v1")
    page = _as(client, "bob").get(f"/projects/{people.project.pk}/training/grpo/new/").content.decode()
    datalist = re.search(r'<datalist id="policy-choices">(.*?)</datalist>', page, re.S).group(1)
    values = re.findall(r'<option value="([^"]+)"', datalist)
    assert checkpoint.location in values and folder.location in values and "org/tiny" in values
    assert "served-model" not in values
