"""'Serve this reward spec version': a job on a real worker runs `rlcore reward serve`; it is called over
HTTP with the token the job page shows, compared with in-process scoring, and Cancel stops it."""

import http.client
import json
from pathlib import Path

import pytest

from rlcore.rewards.engine import score_rows
from rlcore.rewards.spec import RewardSpec
from tests.conftest import token_for, wait_for
from webapp.jobs.models import Job, JobState
from webapp.rubrics.services import SERVING_WITHDRAWN_FILE, reward_spec_create, reward_spec_serving_withdraw

DEFINITION = {"name": "served", "normalization": "none", "components": [
    {"kind": "verifier", "name": "correct", "reference_column": "answer", "mode": "numeric"},
    {"kind": "length_penalty", "name": "overlong", "max_length": 6, "cache_length": 2, "unit": "words",
     "weight": 0.5}]}
ROWS = [{"prompt": "1+1?", "completion": "It is 2", "answer": "2"},
        {"prompt": "1+1?", "completion": "I think it is 3 or so", "answer": "2"}]


def _post(url: str, path: str, body, token: str | None):
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", path, json.dumps(body).encode(),
                       {"Authorization": f"Bearer {token}"} if token else {})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


@pytest.mark.django_db(transaction=True)
def test_it_serves_a_spec_version_from_a_worker_until_cancelled(client, people, celery_workers):
    bob = people.users["bob"]
    version = reward_spec_create(project=people.project, user=bob, name="served", definition=DEFINITION)
    client.force_login(bob)
    base = f"/projects/{people.project.pk}/reward-specs/{version.spec_id}/v/{version.number}/"
    assert "Serve this reward spec version" in client.get(base).content.decode()
    response = client.post(base + "serve/")
    job = Job.objects.get(kind="serve_reward")
    assert response.status_code == 302 and response.url == f"/projects/{people.project.pk}/jobs/{job.pk}/"
    assert job.queue == "default"  # rule-only: no GPU needed

    api = {"HTTP_AUTHORIZATION": f"Bearer {token_for(bob)}"}
    server_api = f"/api/v1/projects/{people.project.pk}/reward-servers/{job.pk}"
    url = wait_for(lambda: client.get(server_api, **api).json()["url"], 90, 0.3, "the server to report its URL")
    token = client.get(server_api, **api).json()["token"]
    page = client.get(f"/projects/{people.project.pk}/jobs/{job.pk}/").content.decode()
    assert url in page and token in page

    status, body = _post(url, "/score", {"rows": ROWS}, token)
    assert status == 200, body
    expected = score_rows(RewardSpec.model_validate(DEFINITION), ROWS)
    assert body["rewards"] == pytest.approx([r.total for r in expected])
    assert body["components"]["overlong"] == [0.0, -1.0]  # hand: 3 words: none; 7 words >= max_length 6: full
    status, body = _post(url, "/get_reward", {"query": ["Q: It is 2"], "prompts": ["Q:"]}, "wrong")
    assert status == 401 and body["detail"][0]["field"] == "Authorization"

    assert client.post(f"/api/v1/projects/{people.project.pk}/jobs/{job.pk}/cancel", **api).status_code == 200
    wait_for(lambda: Job.objects.get(pk=job.pk).state == JobState.CANCELLED, 60, 0.3, "the job to be cancelled")
    job.refresh_from_db()
    assert "stopped after 1 requests (2 completions, 1 refused)" in job.log_tail
    with pytest.raises(OSError):
        _post(url, "/score", {"rows": ROWS}, token)


@pytest.mark.django_db
def test_a_deleted_reward_model_is_withdrawn_from_the_servers_using_it(people, tmp_path):
    from webapp.jobs.services import job_create

    model_path = str(tmp_path / "rm")
    definition = {"name": "rm", "components": [{"kind": "reward_model", "name": "rm", "path": model_path}]}
    version = reward_spec_create(project=people.project, user=people.users["bob"], name="rm", definition={
        **DEFINITION, "name": "rm"})
    version.__class__.objects.filter(pk=version.pk).update(definition=definition)  # a version naming the model
    job = job_create(project=people.project, user=people.users["bob"], kind="serve_reward", argv=["selfcheck"],
                     spec={"reward_spec_version_id": version.pk, "token": "t"})
    other = job_create(project=people.project, user=people.users["bob"], kind="serve_reward", argv=["selfcheck"],
                       spec={"reward_spec_version_id": None, "token": "t"})
    Path(job.output_dir).mkdir(parents=True, exist_ok=True)
    assert reward_spec_serving_withdraw(project=people.project, path=model_path, reason="deleted") == 1
    assert json.loads((Path(job.output_dir) / SERVING_WITHDRAWN_FILE).read_text()) == {model_path: "deleted"}
    assert not (Path(other.output_dir) / SERVING_WITHDRAWN_FILE).exists()
