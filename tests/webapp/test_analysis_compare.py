"""Compare reward functions (issue 12): the page and the API show STARC distances, per-prompt rank
correlation and agreement with human labels equal to independent computations (the paper's formula in
numpy, scipy, Wilson's formula), with the counts they rest on; the drill-down; refusals; roles."""

import itertools
import re

import pytest
from scipy import stats

from tests.webapp.analysis_helpers import label_pairs, scored_project, starc_reference, wilson
from tests.webapp.rubric_helpers import api_client, rubric_definition
from webapp.routing.models import ResponseRewardScore

pytestmark = pytest.mark.django_db


@pytest.fixture
def pool(people):
    dataset, responses, models = scored_project(people.project, people.users["alice"])
    return dataset, responses, models


def _scores(models) -> dict[str, dict[int, float]]:
    return {f"RM {name} #{m.pk}": dict(ResponseRewardScore.objects.filter(reward_model=m)
                                       .values_list("response_id", "score")) for name, m in models.items()}


def _api(client, people):
    return api_client(client, people.users["bob"]), f"/api/v1/projects/{people.project.pk}/analysis"


def test_it_shows_starc_distances_equal_to_the_papers_formula(client, people, pool):
    dataset, responses, models = pool
    client.force_login(people.users["dave"])  # a viewer may analyse
    page = client.post(f"/projects/{people.project.pk}/analysis/",
                       {"dataset_id": dataset.pk, "sources": [f"rm:{m.pk}" for m in models.values()]}, follow=True)
    assert page.status_code == 200
    html = page.content.decode()
    cells = {(int(i), int(j)): float(d) for i, j, d in
             re.findall(r'<td data-i="(\d+)" data-j="(\d+)" data-distance="([^"]+)"', html)}
    names = list(_scores(models))
    expected = starc_reference(_scores(models), {r.pk: r.prompt_id for r in responses})
    assert len(cells) == 9
    for (i, j), d in cells.items():
        assert d == pytest.approx(expected[(names[i], names[j])], abs=1e-6)
    assert cells[(0, 1)] == pytest.approx(0.0, abs=1e-6)  # 3 x base + a per-prompt shift
    assert 0.5 < cells[(0, 2)] < 2.0
    assert '<span id="n-responses">24</span>' in html and '<span id="n-prompts">6</span>' in html
    assert html.count('class="cell"') == 9 and 'id="heatmap"' in html
    assert "<script" not in html.split('id="heatmap"')[1].split("</svg>")[0]


def test_it_shows_rank_correlation_per_prompt_equal_to_scipy(client, people, pool):
    dataset, responses, models = pool
    call, base = _api(client, people)
    keys = [f"rm:{models['base'].pk}", f"rm:{models['noise'].pk}"]
    answer = call("post", f"{base}/comparisons", {"dataset_id": dataset.pk, "sources": keys})
    assert answer.status_code == 201, answer.content
    (rank,) = answer.json()["result"]["rank_correlations"]
    scores = _scores({k: models[k] for k in ("base", "noise")})
    a, b = scores.values()
    rhos, taus = [], []
    for prompt in sorted({r.prompt_id for r in responses}):
        ids = [r.pk for r in responses if r.prompt_id == prompt]
        rhos.append(stats.spearmanr([a[i] for i in ids], [b[i] for i in ids]).statistic)
        taus.append(stats.kendalltau([a[i] for i in ids], [b[i] for i in ids]).statistic)
    assert rank["n_prompts"] == 6
    assert rank["spearman_mean"] == pytest.approx(sum(rhos) / 6)
    assert rank["kendall_tau_b_mean"] == pytest.approx(sum(taus) / 6)
    low, high = stats.t.interval(0.95, 5, loc=sum(rhos) / 6, scale=stats.sem(rhos))
    assert (rank["spearman_ci_low"], rank["spearman_ci_high"]) == (pytest.approx(low), pytest.approx(high))


def test_it_shows_agreement_on_human_labels_with_pair_count_and_wilson_interval(client, people, pool):
    dataset, responses, models = pool
    labels = label_pairs(people.project, people.users["carol"], responses, ["a", "b", "a", "tie", "b", "a"])
    client.force_login(people.users["bob"])
    page = client.post(f"/projects/{people.project.pk}/analysis/",
                       {"dataset_id": dataset.pk, "sources": [f"rm:{models['base'].pk}", f"rm:{models['noise'].pk}"]},
                       follow=True)
    html = page.content.decode()
    score = _scores({"base": models["base"]})[f"RM base #{models['base'].pk}"]
    decisive = [(x, y, c) for x, y, c in labels if c != "tie"]
    agree = sum(1.0 if (score[x] - score[y]) * (1 if c == "a" else -1) > 0 else 0.0 for x, y, c in decisive)
    row = re.search(rf'<tr data-source="RM base #{models["base"].pk}">(.*?)</tr>', html, re.S).group(1)
    assert float(re.search(r'class="accuracy" data-value="([^"]+)"', row).group(1)) == pytest.approx(agree / 5)
    assert '<td class="n-pairs">5</td>' in row and "<td>1</td>" in row  # 5 decisive pairs, 1 tie left out
    low, high = wilson(agree, 5)
    assert f"{low:.3f} to {high:.3f}" in row


def test_it_scores_a_rubric_version_on_the_response_set(client, people, pool):
    from rlcore.rubric import CompiledRubric, Rubric
    from webapp.rubrics.services import rubric_create

    dataset, responses, models = pool
    definition = rubric_definition(criteria=[
        {"name": "polite", "weight": 1, "rule": {"kind": "contains", "texts": ["thank"]}},
        {"name": "short", "weight": 1, "rule": {"kind": "length", "max": 60}}])
    version = rubric_create(project=people.project, user=people.users["alice"], name="Helpful", definition=definition)
    call, base = _api(client, people)
    listed = {s["key"]: s["name"] for s in call("get", f"{base}/sources").json()}
    assert listed[f"rubric:{version.pk}"] == "rubric Helpful v1"
    answer = call("post", f"{base}/comparisons", {"dataset_id": dataset.pk,
                                                  "sources": [f"rubric:{version.pk}", f"rm:{models['base'].pk}"]})
    assert answer.status_code == 201, answer.content
    compiled = CompiledRubric(Rubric.model_validate({**definition, "name": "Helpful"}))
    rubric_scores = {r.pk: compiled.score_rules(r.text, {}) for r in responses}
    scores = {"rubric Helpful v1": rubric_scores, **_scores({"base": models["base"]})}
    expected = starc_reference(scores, {r.pk: r.prompt_id for r in responses})
    starc = answer.json()["result"]["starc"]
    assert starc["distances"][0][1] == pytest.approx(expected[tuple(scores)], abs=1e-6)


def test_it_drills_into_the_pairs_two_sources_order_most_differently(client, people, pool):
    dataset, responses, models = pool
    call, base = _api(client, people)
    made = call("post", f"{base}/comparisons", {"dataset_id": dataset.pk,
                                                "sources": [f"rm:{models['base'].pk}", f"rm:{models['noise'].pk}"]})
    a, b = _scores({k: models[k] for k in ("base", "noise")}).values()
    discordant = sum(1 for x, y in itertools.combinations(responses, 2) if x.prompt_id == y.prompt_id
                     and (a[x.pk] - a[y.pk]) * (b[x.pk] - b[y.pk]) < 0)
    drill = call("get", f"{base}/comparisons/{made.json()['id']}/drill?a=0&b=1&top=5").json()
    assert drill["n_pairs_considered"] == 6 * 6 and drill["n_discordant"] == discordant
    assert len(drill["pairs"]) == min(5, discordant)
    gaps = [p["disagreement"] for p in drill["pairs"]]
    assert gaps == sorted(gaps, reverse=True)
    client.force_login(people.users["dave"])
    page = client.get(f"/projects/{people.project.pk}/analysis/comparisons/{made.json()['id']}/drill/?a=0&b=1")
    assert f'<span id="n-discordant">{discordant}</span>' in page.content.decode()
    same = call("get", f"{base}/comparisons/{made.json()['id']}/drill?a=1&b=1")
    assert same.status_code == 422 and same.json()["detail"][0]["field"] == "b"


def test_it_refuses_sources_scored_on_different_response_sets(client, people, pool):
    dataset, responses, models = pool
    ResponseRewardScore.objects.filter(reward_model=models["noise"], response=responses[5]).delete()
    call, base = _api(client, people)
    answer = call("post", f"{base}/comparisons", {"dataset_id": dataset.pk,
                                                  "sources": [f"rm:{models['base'].pk}", f"rm:{models['noise'].pk}"]})
    assert answer.status_code == 422
    (error,) = answer.json()["detail"]
    assert error["field"] == "sources"
    assert f"'RM noise #{models['noise'].pk}' has no score for 1 of the 24 responses" in error["message"]


def test_it_refuses_one_source_and_unknown_ones(client, people, pool):
    dataset, _, models = pool
    call, base = _api(client, people)
    one = call("post", f"{base}/comparisons", {"dataset_id": dataset.pk, "sources": [f"rm:{models['base'].pk}"]})
    assert one.status_code == 422 and "at least two" in one.json()["detail"][0]["message"]
    other = call("post", f"{base}/comparisons", {"dataset_id": dataset.pk, "sources": [f"rm:{models['base'].pk}", "rm:99999"]})
    assert other.status_code == 422 and "'rm:99999'" in other.json()["detail"][0]["message"]
    client.force_login(people.users["bob"])
    page = client.post(f"/projects/{people.project.pk}/analysis/", {"dataset_id": dataset.pk, "sources": ["rm:99999"]})
    assert page.status_code == 422 and "at least two" in page.content.decode()


def test_it_checks_roles(client, people, pool):
    client.force_login(people.users["carol"])  # annotator: no dashboards
    assert client.get(f"/projects/{people.project.pk}/analysis/").status_code == 403
    client.force_login(people.users["eve"])
    assert client.get(f"/projects/{people.project.pk}/analysis/").status_code == 404
    client.force_login(people.users["dave"])
    assert "Analysis</a>" in client.get(f"/projects/{people.project.pk}/").content.decode()


def test_it_compares_an_lm_judges_rubric_grades_as_a_source(client, people, pool):
    from webapp.annotation.models import Comparison, LabelSource, PreferenceLabel
    from webapp.rubrics.services import rubric_create

    dataset, responses, models = pool
    definition = rubric_definition(criteria=[
        {"name": "helpful", "weight": 2, "scale_min": 1, "scale_max": 5},
        {"name": "honest", "weight": 1, "scale_min": 0, "scale_max": 10}])
    version = rubric_create(project=people.project, user=people.users["alice"], name="Judged", definition=definition)
    grades = {r.pk: {"helpful": 1 + (k * 7) % 5, "honest": (k * 3) % 11} for k, r in enumerate(responses)}
    for x, y in zip(responses[::2], responses[1::2]):  # one LM label per pair of neighbours, grading both
        c = Comparison.objects.create(project=people.project, prompt_id=x.prompt_id, response_ids=[x.pk, y.pk])
        PreferenceLabel.objects.create(comparison=c, source=LabelSource.LM, choice="a", model_version="judge-x",
                                       rubric_version=version,
                                       criterion_scores={str(x.pk): grades[x.pk], str(y.pk): grades[y.pk]})
    call, base = _api(client, people)
    key = f"judge:{version.pk}:judge-x"
    listed = {s["key"]: s for s in call("get", f"{base}/sources").json()}
    assert listed[key]["name"] == "judge judge-x grades on Judged v1"
    assert f"{len(responses)} responses graded" in listed[key]["note"]
    answer = call("post", f"{base}/comparisons", {"dataset_id": dataset.pk, "sources": [key, f"rm:{models['base'].pk}"]})
    assert answer.status_code == 201, answer.content
    # the rubric's weighted mean of each criterion normalised to its scale, by hand
    judged = {rid: (2 * (g["helpful"] - 1) / 4 + 1 * g["honest"] / 10) / 3 for rid, g in grades.items()}
    scores = {"judge": judged, **_scores({"base": models["base"]})}
    expected = starc_reference(scores, {r.pk: r.prompt_id for r in responses})
    starc = answer.json()["result"]["starc"]
    assert starc["n_responses"] == len(responses)
    assert starc["distances"][0][1] == pytest.approx(expected[tuple(scores)], abs=1e-6)
