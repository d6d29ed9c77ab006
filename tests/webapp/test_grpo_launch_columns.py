"""Launching GRPO on a prompt set whose rows do not all share columns (issue 10, defect 8)."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from rlcore.training.snapshot import prompt_rows
from tests.conftest import token_for
from webapp.jobs.models import Job
from webapp.rubrics.services import reward_spec_create

pytestmark = pytest.mark.django_db
VERIFIER = {"kind": "verifier", "name": "correct", "reference_column": "answer", "mode": "exact", "weight": 1.0}
PENALTY = {"kind": "length_penalty", "name": "overlong", "max_length": 6, "cache_length": 4, "weight": 0.5}


def _mixed_dataset(client, people) -> int:
    rows = [{"prompt": f"{i} + {i}?", "task": "math", "answer": str(2 * i)} if i % 2 == 0
            else {"prompt": f"Say hello {i}", "task": "chat"} for i in range(16)]
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    response = client.post(f"/api/v1/projects/{people.project.pk}/datasets",
                           {"file": SimpleUploadedFile("mixed.jsonl", content), "name": "mixed"},
                           headers={"Authorization": f"Bearer {token_for(people.users['bob'])}"})
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _launch(client, people, components, tmp_path):
    version = reward_spec_create(project=people.project, user=people.users["alice"], name="mixed",
                                 definition={"name": "mixed", "components": components})
    (tmp_path / "policy").mkdir(exist_ok=True)
    (tmp_path / "policy" / "config.json").write_text("{}")  # launch checks it is a model folder, not its weights
    return client.post(f"/api/v1/projects/{people.project.pk}/training/grpo", json.dumps({
        "dataset_id": _mixed_dataset(client, people), "reward_spec_version_id": version.pk,
        "policy": str(tmp_path / "policy")}), content_type="application/json",
        headers={"Authorization": f"Bearer {token_for(people.users['bob'])}"})


def test_it_refuses_a_prompt_set_half_of_which_no_component_can_score(client, people, tmp_path):
    response = _launch(client, people, [VERIFIER], tmp_path)
    assert response.status_code == 422, response.content
    [problem] = response.json()["detail"]
    assert problem["field"] == "dataset_id"
    assert "8 of 16 prompts lack column 'answer', which component 'correct' needs" in problem["message"]
    assert not Job.objects.exists()


def test_it_launches_when_another_component_scores_the_rows_without_the_column(client, people, tmp_path):
    response = _launch(client, people, [VERIFIER, {**PENALTY, "when": {"column": "task", "equals": "chat"}}], tmp_path)
    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["id"])
    rows = prompt_rows(job.spec["prompt_snapshot"])  # what the worker's child reads
    assert len(rows) == 16
    assert [row["answer"] for row in rows[:4]] == ["0", None, "4", None]
