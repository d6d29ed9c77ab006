"""The GRPO launch form and API on presets (issue 10, defects 4 and 5): an inert clip is said, a preset that
contradicts the reward's normalisation is refused, a prompt set smaller than one rollout is refused."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import token_for
from webapp.rubrics.services import reward_spec_create

pytestmark = pytest.mark.django_db
PENALTY = {"kind": "length_penalty", "name": "overlong", "max_length": 6, "cache_length": 4, "weight": 1.0}


def _dataset(client, people, n: int) -> int:
    content = "".join(json.dumps({"prompt": f"Say hello {i}"}) + "\n" for i in range(n)).encode()
    response = client.post(f"/api/v1/projects/{people.project.pk}/datasets",
                           {"file": SimpleUploadedFile("p.jsonl", content), "name": f"p{n}"},
                           headers={"Authorization": f"Bearer {token_for(people.users['bob'])}"})
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _post_form(client, people, tmp_path, *, n_prompts=16, normalization="none", **fields):
    version = reward_spec_create(project=people.project, user=people.users["alice"], name="short", definition={
        "name": "short", "normalization": normalization, "components": [PENALTY]})
    (tmp_path / "policy").mkdir(exist_ok=True)
    (tmp_path / "policy" / "config.json").write_text("{}")  # launch checks it is a model folder, not its weights
    client.force_login(people.users["bob"])
    data = {"dataset": _dataset(client, people, n_prompts), "reward_spec_version": version.pk,
            "policy": str(tmp_path / "policy"), "queue": "gpu", "per_device_train_batch_size": 8,
            "num_generations": 8, **fields}
    return client.post(f"/projects/{people.project.pk}/training/grpo/new/", data, follow=True)


def test_it_says_on_launch_that_the_gspo_clip_is_inert_with_one_step_per_rollout(client, people, tmp_path):
    response = _post_form(client, people, tmp_path, preset="gspo", steps_per_generation=1)
    page = response.content.decode()
    assert response.status_code == 200 and "GRPO job" in page
    assert "preset &#x27;gspo&#x27;: its clip range (epsilon 0.0003, epsilon_high 0.0004) never acts" in page


def test_it_says_nothing_when_the_preset_keeps_the_papers_minibatches(client, people, tmp_path):
    page = _post_form(client, people, tmp_path, preset="gspo").content.decode()
    assert "GRPO job" in page and "never acts" not in page


def test_it_refuses_dr_grpo_with_a_group_zscore_reward(client, people, tmp_path):
    response = _post_form(client, people, tmp_path, preset="dr_grpo", normalization="group_zscore")
    page = response.content.decode()
    assert response.status_code == 422
    assert "preset &#x27;dr_grpo&#x27; removes the group standard-deviation scaling" in page
    assert "normalization &#x27;group_zscore&#x27;" in page


def test_it_refuses_a_prompt_set_smaller_than_one_rollout(client, people, tmp_path):
    response = _post_form(client, people, tmp_path, n_prompts=8, preset="dapo")
    assert response.status_code == 422
    assert "has 8 prompts, but one rollout of preset &#x27;dapo&#x27; needs 16" in response.content.decode()
