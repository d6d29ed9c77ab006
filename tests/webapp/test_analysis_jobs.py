"""Compare reward functions on response sets above the inline cap (issue 12): rubric and spec sources are
scored by worker jobs (``python -m rlcore reward score`` on frozen rows), the comparison is computed when they
succeed and ends with the STARC matrix of the paper's formula computed here from hand-scored rules; the page
polls while pending and shows a failed job's reason."""

import re

import pytest

from tests.conftest import wait_for
from tests.webapp.analysis_helpers import scored_project, starc_reference
from tests.webapp.rubric_helpers import api_client
from webapp.routing.models import ResponseRewardScore

pytestmark = pytest.mark.django_db(transaction=True)

RUBRIC = {"name": "Helpful", "criteria": [
    {"name": "polite", "weight": 1, "rule": {"kind": "contains", "texts": ["thank"]}},
    {"name": "wordy", "weight": 2, "rule": {"kind": "contains", "texts": ["word " * 10]}}]}
SPEC = {"name": "short", "normalization": "none", "components": [
    {"kind": "length_penalty", "name": "overlong", "max_length": 60, "cache_length": 40, "unit": "chars",
     "weight": 1.0}]}


def _by_hand_rubric(text: str) -> float:
    """The rubric's weighted mean of its two pass/fail rules."""
    polite, wordy = "thank" in text.lower(), "word " * 10 in text
    return (1 * polite + 2 * wordy) / 3


def _by_hand_penalty(text: str) -> float:
    """DAPO's soft overlong penalty: 0 up to max - cache, then linear down to -1 at max, -1 beyond."""
    n, top, cache = len(text), 60, 40
    if n <= top - cache:
        return 0.0
    return ((top - cache) - n) / cache if n <= top else -1.0


@pytest.fixture
def pool(people, settings):
    settings.ANALYSIS_INLINE_RESPONSES = 10  # the pool has 24 responses: above the cap
    return scored_project(people.project, people.users["alice"])


def _sources(people, models):
    from webapp.rubrics.services import reward_spec_create, rubric_create

    rubric = rubric_create(project=people.project, user=people.users["alice"], name="Helpful", definition=RUBRIC)
    spec = reward_spec_create(project=people.project, user=people.users["alice"], name="short", definition=SPEC)
    return [f"rubric:{rubric.pk}", f"spec:{spec.pk}", f"rm:{models['base'].pk}"]


def test_it_scores_sources_above_the_inline_cap_in_worker_jobs_and_ends_with_the_papers_starc(
        client, people, pool, celery_workers):
    from webapp.analysis.models import SourceComparison
    from webapp.jobs.models import Job

    dataset, responses, models = pool
    call = api_client(client, people.users["bob"])
    base = f"/api/v1/projects/{people.project.pk}/analysis/comparisons"
    answer = call("post", base, {"dataset_id": dataset.pk, "sources": _sources(people, models)})
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["state"] == "pending" and body["result"] is None
    jobs = Job.objects.filter(kind="score_sources").order_by("pk")
    assert [(j.spec["source_name"], j.queue) for j in jobs] == [("rubric Helpful v1", "default"),
                                                                 ("spec short v1", "default")]
    assert jobs[0].argv[:2] == ["reward", "score"]

    comparison = wait_for(lambda: (c := SourceComparison.objects.get(pk=body["id"])).state != "pending" and c,
                          120, 0.2, "the scoring jobs to finish")
    assert comparison.state == "ready", comparison.error
    rm = dict(ResponseRewardScore.objects.filter(reward_model=models["base"]).values_list("response_id", "score"))
    scores = {"rubric Helpful v1": {r.pk: _by_hand_rubric(r.text) for r in responses},
              "spec short v1": {r.pk: _by_hand_penalty(r.text) for r in responses},
              f"RM base #{models['base'].pk}": rm}
    expected = starc_reference(scores, {r.pk: r.prompt_id for r in responses})
    starc = call("get", f"{base}/{comparison.pk}").json()["result"]["starc"]
    names = list(scores)
    assert starc["sources"] == names and starc["n_responses"] == len(responses)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            assert starc["distances"][i][j] == pytest.approx(expected[(a, b)], abs=1e-6), (a, b)
    assert min(expected[(names[0], names[1])], expected[(names[0], names[2])]) > 0.1  # they differ: it can fail

    client.force_login(people.users["dave"])
    page = client.get(f"/projects/{people.project.pk}/analysis/comparisons/{comparison.pk}/").content.decode()
    assert 'id="heatmap"' in page and 'id="comparison-status"' not in page


def test_it_shows_progress_while_pending_and_refreshes_when_done(client, people, pool):
    from webapp.analysis.models import ComparisonState, SourceComparison

    dataset, responses, models = pool
    comparison = SourceComparison.objects.create(project=people.project, dataset=dataset, sources=[],
                                                 state=ComparisonState.PENDING, created_by=people.users["alice"])
    client.force_login(people.users["dave"])
    url = f"/projects/{people.project.pk}/analysis/comparisons/{comparison.pk}/"
    page = client.get(url).content.decode()
    poll = re.search(r'<div id="comparison-status"[^>]*>', page).group(0)
    assert 'hx-trigger="every 2s"' in poll and "[" not in poll and "?part=status" in poll
    assert 'id="heatmap"' not in page
    assert client.get(url + "?part=status", HTTP_HX_REQUEST="true").status_code == 200
    SourceComparison.objects.filter(pk=comparison.pk).update(state=ComparisonState.FAILED, error="x")
    done = client.get(url + "?part=status", HTTP_HX_REQUEST="true")
    assert done.headers.get("HX-Refresh") == "true"


def test_it_fails_the_comparison_with_the_jobs_reason_and_uses_the_gpu_queue_for_a_reward_model(
        client, people, pool, celery_workers, tmp_path):
    from webapp.analysis.models import SourceComparison
    from webapp.jobs.models import Job
    from webapp.rubrics.services import reward_spec_create

    dataset, responses, models = pool
    broken = tmp_path / "broken-rm"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json"):  # passes the spec's file check; cannot load: the child fails
        (broken / name).write_text("{}")
    (broken / "model.safetensors").write_bytes(b"not weights")
    spec = reward_spec_create(project=people.project, user=people.users["alice"], name="with-rm", definition={
        "name": "with-rm", "components": [{"kind": "reward_model", "name": "rm", "path": str(broken), "weight": 1}]})
    call = api_client(client, people.users["bob"])
    base = f"/api/v1/projects/{people.project.pk}/analysis/comparisons"
    answer = call("post", base, {"dataset_id": dataset.pk, "sources": [f"spec:{spec.pk}", f"rm:{models['base'].pk}"]})
    assert answer.status_code == 202, answer.content
    [job] = Job.objects.filter(kind="score_sources")
    assert job.queue == "gpu"
    comparison = wait_for(lambda: (c := SourceComparison.objects.get(pk=answer.json()["id"])).state != "pending" and c,
                          120, 0.2, "the scoring job to fail")
    assert comparison.state == "failed" and comparison.result is None
    assert comparison.error.startswith(f"spec with-rm v1: its scoring job {job.pk} failed: ")
    client.force_login(people.users["dave"])
    page = client.get(f"/projects/{people.project.pk}/analysis/comparisons/{comparison.pk}/").content.decode()
    assert 'id="comparison-error"' in page and f"its scoring job {job.pk} failed" in page
