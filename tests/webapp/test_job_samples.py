"""The samples browser of a GRPO job (page, htmx table, REST twin), the run-directory listing, and the
metric-mirror field of the launch forms (issue 15)."""

import json
import random

import pytest

from tests.conftest import token_for
from webapp.jobs.services import job_create, job_record_events
from webapp.jobs.kinds import GRPO_KIND

pytestmark = pytest.mark.django_db
PROMPTS = ["Say hello", "Name a colour", "Count to three"]


def _samples(n_steps: int = 12) -> list[dict]:
    """Sample events as the training child prints them: 3 prompts per step, two components."""
    rng = random.Random(0)
    events = []
    for step in range(1, n_steps + 1):
        for prompt in PROMPTS:
            agrees, short = round(rng.uniform(-1, 1), 3), round(rng.uniform(-1, 0), 3)
            if step == 5 and prompt == PROMPTS[0]:
                agrees = None  # a non-finite reward is stored as null
            completion = "x" * rng.randint(1, 60)
            total = sum(v for v in (agrees, 0.5 * short) if v is not None)
            events.append({"kind": "sample", "step": step, "prompt": prompt, "completion": completion,
                           "rewards": {"agrees": agrees, "short": short}, "reward": total,
                           "advantage": round(rng.uniform(-2, 2), 3)})
    return events


@pytest.fixture
def job(people):
    job = job_create(project=people.project, user=people.users["bob"], kind=GRPO_KIND, argv=[], title="GRPO: t",
                     spec={"sample_every": 1, "samples_per_report": 3})
    job_record_events(job_id=job.pk, events=_samples())
    return job


def _api(client, people, job, **params):
    return client.get(f"/api/v1/projects/{people.project.pk}/jobs/{job.pk}/samples", params,
                      headers={"Authorization": f"Bearer {token_for(people.users['dave'])}"})


def test_it_sorts_by_a_component_high_to_low_with_missing_values_last(client, people, job):
    body = _api(client, people, job, sort="-component:agrees", page_size=200).json()
    expected = sorted((e for e in _samples()), key=lambda e: (e["rewards"]["agrees"] is None,
                                                               -(e["rewards"]["agrees"] or 0)))
    assert [s["rewards"]["agrees"] for s in body["samples"]] == [e["rewards"]["agrees"] for e in expected]
    assert body["total"] == body["matched"] == 36 and body["without_value"] == 1
    assert body["components"] == ["agrees", "short"]


def test_it_filters_steps_prompt_and_a_value_range_in_the_database(client, people, job):
    body = _api(client, people, job, step_min=3, step_max=8, prompt="COLOUR", value="length", value_min=20,
                sort="length").json()
    expected = [e for e in _samples() if 3 <= e["step"] <= 8 and e["prompt"] == "Name a colour"
                and len(e["completion"]) >= 20]
    assert body["matched"] == len(expected) > 0
    assert [s["length"] for s in body["samples"]] == sorted(len(e["completion"]) for e in expected)


def test_it_paginates(client, people, job):
    first = _api(client, people, job, sort="step", page_size=10).json()
    last = _api(client, people, job, sort="step", page_size=10, page=4).json()
    assert first["pages"] == 4 and [s["step"] for s in first["samples"]] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4]
    assert len(last["samples"]) == 6 and last["page"] == 4


def test_it_follows_one_prompt_across_steps(client, people, job):
    anchor = _api(client, people, job, prompt="Count").json()["samples"][0]
    body = _api(client, people, job, same_prompt_as=anchor["id"], sort="step", page_size=50).json()
    assert {s["prompt"] for s in body["samples"]} == {"Count to three"}
    assert [s["step"] for s in body["samples"]] == list(range(1, 13))


def test_it_answers_an_unknown_sort_key_with_a_422_naming_the_field(client, people, job):
    response = _api(client, people, job, sort="-component:nope")
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["field"] == "sort" and "component:agrees" in problem["message"]
    response = _api(client, people, job, page_size=0)
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "page_size"


def test_it_checks_project_membership(client, people, job):
    response = client.get(f"/api/v1/projects/{people.project.pk}/jobs/{job.pk}/samples",
                          headers={"Authorization": f"Bearer {token_for(people.users['eve'])}"})
    assert response.status_code in (403, 404)


def test_the_page_filters_with_htmx_and_keeps_the_filters_on_refresh(client, people, job):
    client.force_login(people.users["dave"])
    url = f"/projects/{people.project.pk}/jobs/{job.pk}/"
    page = client.get(url).content.decode()
    assert 'id="sample-filters"' in page and "36 of 36 logged samples match" in page
    assert 'hx-trigger="refresh from:#job-samples"' in page

    table = client.get(url, {"part": "sample-table", "prompt": "hello", "sort": "-reward"},
                       headers={"HX-Request": "true"}).content.decode()
    assert "<form" not in table and "12 of 36 logged samples match" in table
    assert "1 have no value to sort by" not in table  # the total reward is always there
    # the table's own refresh URL carries the filters, so a new sample does not reset them
    assert "?part=sample-table&amp;prompt=hello&amp;sort=-reward" in table
    assert table.count("across steps") == 12


def test_the_page_shows_a_wrong_filter_as_a_message(client, people, job):
    client.force_login(people.users["dave"])
    url = f"/projects/{people.project.pk}/jobs/{job.pk}/"
    page = client.get(url, {"step_min": "abc"})
    assert page.status_code == 422 and "step_min: Input should be a valid integer" in page.content.decode()
    table = client.get(url, {"part": "sample-table", "value": "component:x", "value_min": "1"},
                       headers={"HX-Request": "true"})
    assert table.status_code == 200  # htmx swaps no 4xx: the message must still reach the table
    assert "value: &#x27;component:x&#x27; is not a value of this job&#x27;s samples" in table.content.decode()


def test_the_run_directory_lists_its_files_and_nothing_outside(client, people, job, tmp_path):
    from pathlib import Path

    run = Path(job.output_dir)
    (run / "tensorboard").mkdir(parents=True)
    (run / "tensorboard" / "events.out.tfevents.1").write_bytes(b"1234")
    (run / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "secret").mkdir()
    (run / "escape").symlink_to(tmp_path / "secret")
    client.force_login(people.users["dave"])
    url = f"/projects/{people.project.pk}/jobs/{job.pk}/files/"

    page = client.get(url).content.decode()
    assert "metrics.jsonl" in page and "tensorboard/" in page
    inner = client.get(url, {"path": "tensorboard"}).content.decode()
    assert "events.out.tfevents.1" in inner and "<td>4</td>" in inner
    for outside in ("..", "../..", "/etc", "escape", "tensorboard/../../"):
        assert client.get(url, {"path": outside}).status_code == 404, outside
    detail = client.get(f"/projects/{people.project.pk}/jobs/{job.pk}/").content.decode()
    assert f"{url}" in detail and job.output_dir in detail


def test_the_grpo_launch_form_offers_the_metric_mirrors(client, people):
    client.force_login(people.users["bob"])
    page = client.get(f"/projects/{people.project.pk}/training/grpo/new/").content.decode()
    for tracker in ("tensorboard", "trackio", "wandb"):
        assert f'name="report_to" value="{tracker}"' in page
    page = client.get(f"/projects/{people.project.pk}/training/reward-model/new/").content.decode()
    assert 'name="report_to" value="tensorboard"' in page


def test_a_launch_asking_for_wandb_when_it_is_not_installed_says_so(client, people):
    if __import__("importlib.util").util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    response = client.post(f"/api/v1/projects/{people.project.pk}/training/reward-model",
                           json.dumps({"name": "rm", "spec": {"report_to": ["wandb"]}}),
                           content_type="application/json",
                           headers={"Authorization": f"Bearer {token_for(people.users['bob'])}"})
    assert response.status_code == 422, response.content
    [problem] = response.json()["detail"]
    assert problem["field"] == "spec.report_to" and "wandb is not installed here: pip install wandb" in problem["message"]
