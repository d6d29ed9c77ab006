"""Resume is offered only for a training run that left a checkpoint (issue 10, defect 8)."""

import pytest

from tests.conftest import token_for
from webapp.jobs.models import Job, JobState

pytestmark = pytest.mark.django_db


def _failed_grpo_job(people, tmp_path) -> Job:
    return Job.objects.create(project=people.project, kind="train_grpo", created_by=people.users["alice"],
                              state=JobState.FAILED, title="GRPO: early", output_dir=str(tmp_path),
                              argv=["train", "grpo", "spec.json"], error="policy: model directory does not exist")


def test_it_does_not_offer_resume_for_a_run_that_failed_before_its_first_checkpoint(client, people, tmp_path):
    job = _failed_grpo_job(people, tmp_path)
    client.force_login(people.users["bob"])
    page = client.get(f"/projects/{people.project.pk}/jobs/{job.pk}/").content.decode()
    assert "Resume from last checkpoint" not in page
    assert "nothing to resume from" in page and f"/training/grpo/new/?clone={job.pk}" in page
    response = client.post(f"/api/v1/projects/{people.project.pk}/jobs/{job.pk}/resume",
                           headers={"Authorization": f"Bearer {token_for(people.users['bob'])}"})
    assert response.status_code == 422
    assert "before its first checkpoint" in response.json()["detail"][0]["message"]
    assert Job.objects.count() == 1


def test_it_offers_resume_once_a_checkpoint_exists(client, people, tmp_path):
    job = _failed_grpo_job(people, tmp_path)
    (tmp_path / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    client.force_login(people.users["bob"])
    page = client.get(f"/projects/{people.project.pk}/jobs/{job.pk}/").content.decode()
    assert "Resume from last checkpoint" in page and "nothing to resume from" not in page
