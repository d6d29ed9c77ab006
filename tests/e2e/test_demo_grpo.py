"""A fresh database + ``manage.py seed_demo`` gives a GRPO launch a newcomer can run offline: the launch
page preselects the demo policy (random weights, built locally), the demo prompt set and the demo reward
spec; submitted with its defaults (only max_steps lowered, to keep the test short) it is accepted, and a
real Celery worker runs it to success."""

import json

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from tests.conftest import token_for, wait_for
from webapp.jobs.models import Job, JobArtifact, JobState, MetricPoint
from webapp.projects.models import Project

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

DEMO_LABEL = "demo policy: random weights"


def _launch_page_data(page_form) -> dict:
    """What a browser submits for the launch page untouched: every field's initial value."""
    data = {}
    for name in page_form.fields:
        value = page_form[name].value()
        if value not in (None, ""):
            data[name] = value if not isinstance(value, bool) else ("on" if value else "")
    return data


# the default MODEL_ROOTS (VAR_DIR/models), not the test suite's wider one
@override_settings(MODEL_ROOTS=[str(settings.VAR_DIR / "models")])
def test_seed_demo_gives_a_grpo_launch_that_runs_to_success_with_the_demo_policy(celery_workers, client, capsys):
    from webapp.training.forms import GRPOLaunchForm

    call_command("seed_demo")
    policy = settings.VAR_DIR / "models" / "demo-policy"
    assert DEMO_LABEL in capsys.readouterr().out and (policy / "config.json").is_file()
    weights = (policy / "model.safetensors").stat().st_mtime_ns
    call_command("seed_demo")  # idempotent: the policy folder is reused, not rebuilt
    assert (policy / "model.safetensors").stat().st_mtime_ns == weights
    config = json.loads((policy / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["num_hidden_layers"] == 2

    project = Project.objects.get(name__startswith="Demo")
    demo = project.memberships.get(user__username="demo").user
    client.force_login(demo)
    launch_url = reverse("grpo_launch", args=[project.pk])
    page = client.get(launch_url)
    html = page.content.decode()
    assert page.status_code == 200 and DEMO_LABEL in html and str(policy) in html
    assert "Qwen/Qwen2.5-0.5B-Instruct" in html and "must reach the Hugging Face Hub" in html
    assert "one rollout needs 16 prompts" in html

    form = GRPOLaunchForm(project=project)
    data = _launch_page_data(form)
    assert data["policy"] == str(policy)
    assert form.fields["dataset"].queryset.get(pk=data["dataset"]).row_count >= 16
    assert data["preset"] == "dapo" and "max_steps" not in data

    # the 8-prompt annotation set is refused with the service's own count, naming what one rollout needs
    answers = form.fields["dataset"].queryset.get(name="Demo: assistant answers")
    refused = client.post(launch_url, {**data, "dataset": answers.pk})
    assert refused.status_code == 422
    assert "has 8 prompts, but one rollout of preset &#x27;dapo&#x27; needs 16" in refused.content.decode()

    launched = client.post(launch_url, {**data, "max_steps": "2"})
    assert launched.status_code == 302, launched.content.decode()[-3000:]
    job = Job.objects.get(project=project, kind="train_grpo", state__in=[JobState.QUEUED, JobState.RUNNING])
    assert job.spec["policy"] == str(policy) and job.spec["policy_label"] == DEMO_LABEL
    assert job.spec["max_completion_length"] == 256 and job.spec["num_generations"] == 8  # the defaults

    wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, 150, 0.5, "the demo GRPO job to finish")
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, f"{job.error}\n{job.log_tail[-3000:]}"
    assert set(MetricPoint.objects.filter(job=job, name="loss").values_list("step", flat=True)) == {1, 2}
    assert MetricPoint.objects.filter(job=job, name="rewards/helpful/mean").exists()
    [artifact] = JobArtifact.objects.filter(job=job, type="policy")

    job_page = client.get(reverse("job_detail", args=[project.pk, job.pk])).content.decode()
    assert DEMO_LABEL in job_page and str(policy) in job_page
    registry = client.get(reverse("training_home", args=[project.pk])).content.decode()
    assert DEMO_LABEL in registry and artifact.path in registry
    # the run's output is now a policy the next launch offers, saying where it came from
    offered = dict(GRPOLaunchForm(project=project).policy_choices)
    assert offered[artifact.path].startswith(f"GRPO run #{job.pk}") and DEMO_LABEL in offered[artifact.path]
    listed = client.get(f"/api/v1/projects/{project.pk}/policies",
                        headers={"Authorization": f"Bearer {token_for(demo)}"}).json()
    assert [p["label"] for p in listed][0] == DEMO_LABEL and listed[0]["path"] == str(policy)
    assert [p["path"] for p in listed[1:]] == [artifact.path]
