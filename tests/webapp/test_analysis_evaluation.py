"""Evaluate reward models (issue 12): accuracy on the human labels the model never saw — labels in its
training snapshot are excluded and counted — with Wilson interval and pair count, per annotator and
length bucket; a refusal naming the model when too few are left; LM judges against the same labels."""

import itertools
import json
import re

import numpy as np
import pytest
from scipy.special import expit

from rlcore.training.snapshot import split_held_out

from tests.webapp.analysis_helpers import scored_project, wilson
from tests.webapp.rubric_helpers import api_client
from webapp.annotation.models import Comparison, LabelSource, PreferenceLabel
from webapp.datasets.models import Response
from webapp.routing.models import ResponseRewardScore

pytestmark = pytest.mark.django_db


@pytest.fixture
def labelled(people, tmp_path):
    """36 comparisons (every pair within a prompt), one human label each; the 'base' model trained on the
    first 12 labels (its snapshot; held-out pairs from a separate file, so all 12 were trained on)."""
    dataset, responses, models = scored_project(people.project, people.users["alice"])
    labels = []
    for k, (x, y) in enumerate((x, y) for x, y in itertools.combinations(responses, 2) if x.prompt_id == y.prompt_id):
        c = Comparison.objects.create(project=people.project, prompt_id=x.prompt_id, response_ids=[x.pk, y.pk])
        choice = ["a", "b", "a", "tie", "a", "b", "b"][k % 7]
        annotator = people.users["carol" if k % 2 else "bob"]
        labels.append(PreferenceLabel.objects.create(comparison=c, source=LabelSource.HUMAN, annotator=annotator,
                                                     choice=choice, strength=0 if choice == "tie" else 1))
    snapshot = tmp_path / "snapshot.jsonl"
    snapshot.write_text("".join(json.dumps({"prompt": "q", "chosen": f"c{lb.pk}", "rejected": f"r{lb.pk}",
                                            "label_id": lb.pk, "comparison_id": lb.comparison_id}) + "\n"
                                for lb in labels[:12]))
    model = models["base"]
    model.snapshot_path, model.spec = str(snapshot), {"preference_snapshot": str(snapshot),
                                                      "eval_snapshot": str(tmp_path / "eval.jsonl")}
    model.save()
    return labels, model


def test_it_evaluates_only_on_labels_outside_the_training_rows(client, people, labelled):
    labels, model = labelled
    call = api_client(client, people.users["dave"])
    answer = call("get", f"/api/v1/projects/{people.project.pk}/analysis/reward-models/{model.pk}/evaluation")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["n_excluded_training"] == 12 and body["n_labels"] == 36
    score = dict(ResponseRewardScore.objects.filter(reward_model=model).values_list("response_id", "score"))
    held = [lb for lb in labels[12:] if lb.choice != "tie"]

    def right(lb):
        a, b = lb.comparison.response_ids
        margin = score[a] - score[b] if lb.choice == "a" else score[b] - score[a]
        return 1.0 if margin > 0 else 0.0

    overall = body["evaluation"]["overall"]
    hits = sum(right(lb) for lb in held)
    assert overall["n_pairs"] == len(held) and overall["n_ties_excluded"] == 24 - len(held)
    assert overall["accuracy"] == pytest.approx(hits / len(held))
    assert (overall["ci_low"], overall["ci_high"]) == tuple(pytest.approx(v) for v in wilson(hits, len(held)))
    by_annotator = {g["value"]: g for g in body["evaluation"]["by_group"]["annotator"]}
    carol = [lb for lb in held if lb.annotator.username == "carol"]
    assert by_annotator["carol"]["n_pairs"] == len(carol)
    assert by_annotator["carol"]["accuracy"] == pytest.approx(sum(right(lb) for lb in carol) / len(carol))
    assert {"category", "length"} <= set(body["evaluation"]["by_group"])

    client.force_login(people.users["dave"])
    page = client.get(f"/projects/{people.project.pk}/analysis/reward-models/{model.pk}/").content.decode()
    assert '<span id="n-excluded">12</span>' in page and f'<td class="n-pairs">{len(held)}</td>' in page


def test_it_refuses_too_few_held_out_labels_naming_the_model(client, people, labelled):
    labels, model = labelled
    PreferenceLabel.objects.filter(pk__in=[lb.pk for lb in labels[16:]]).delete()
    call = api_client(client, people.users["dave"])
    answer = call("get", f"/api/v1/projects/{people.project.pk}/analysis/reward-models/{model.pk}/evaluation")
    assert answer.status_code == 422
    message = answer.json()["detail"][0]["message"]
    assert f"'RM base #{model.pk}'" in message and "needs at least 10" in message
    assert "12 of 16 human labels were in its training rows" in message


def test_it_scores_an_lm_judge_against_the_human_labels_of_the_same_comparisons(client, people, labelled):
    labels, _ = labelled
    for k, lb in enumerate(labels):  # the judge agrees on every third decisive label's opposite, else agrees
        if lb.choice == "tie":
            continue
        choice = lb.choice if k % 3 else ("b" if lb.choice == "a" else "a")
        PreferenceLabel.objects.create(comparison=lb.comparison, source=LabelSource.LM, choice=choice,
                                       model_version="judge-1", strength=1)
    decisive = [(k, lb) for k, lb in enumerate(labels) if lb.choice != "tie"]
    call = api_client(client, people.users["dave"])
    (judge,) = call("get", f"/api/v1/projects/{people.project.pk}/analysis/judges/evaluation").json()
    assert judge["judge"] == "judge-1"
    overall = judge["evaluation"]["overall"]
    assert overall["n_pairs"] == len(decisive)
    assert overall["accuracy"] == pytest.approx(sum(1 for k, _ in decisive if k % 3) / len(decisive))


def _margin(score, lb):
    a, b = lb.comparison.response_ids
    return score[a] - score[b] if lb.choice == "a" else score[b] - score[a]


def test_it_breaks_accuracy_down_by_tertile_of_a_routing_feature(client, people, labelled):
    labels, model = labelled
    call = api_client(client, people.users["dave"])
    body = call("get", f"/api/v1/projects/{people.project.pk}/analysis/reward-models/{model.pk}/evaluation").json()
    score = dict(ResponseRewardScore.objects.filter(reward_model=model).values_list("response_id", "score"))
    texts = dict(Response.objects.values_list("id", "text"))
    held = labels[12:]

    def tokens(text):  # Hybrid Preferences' token count: words and single punctuation marks
        return len(re.findall(r"\w+|[^\w\s]", text))

    diff = {lb.pk: abs(tokens(texts[lb.comparison.response_ids[0]]) - tokens(texts[lb.comparison.response_ids[1]]))
            for lb in held}
    cuts = np.quantile(list(diff.values()), [1 / 3, 2 / 3])
    rows = {g["value"].split(" (")[0]: g for g in body["evaluation"]["by_group"]["routing: token_len_diff (tertiles)"]}
    assert set(rows) <= {"1 low", "2 mid", "3 high"} and len(rows) >= 2
    for k, name in enumerate(["1 low", "2 mid", "3 high"]):
        members = [lb for lb in held if np.searchsorted(cuts, diff[lb.pk], side="left") == k]
        decisive = [lb for lb in members if lb.choice != "tie"]
        if not members:
            assert name not in rows
            continue
        assert rows[name]["n_pairs"] == len(decisive) and rows[name]["n_ties_excluded"] == len(members) - len(decisive)
        if decisive:
            hits = sum(1.0 if _margin(score, lb) > 0 else 0.0 for lb in decisive)
            assert rows[name]["accuracy"] == pytest.approx(hits / len(decisive))
    low = rows["1 low"]["value"]
    assert f"≤ {cuts[0]:.3g}" in low

    client.force_login(people.users["dave"])
    page = client.get(f"/projects/{people.project.pk}/analysis/reward-models/{model.pk}/").content.decode()
    assert 'data-group="routing: token_len_diff (tertiles)"' in page


def test_it_draws_a_reliability_diagram_whose_bars_are_the_bins_computed_by_hand(client, people, labelled):
    labels, model = labelled
    score = dict(ResponseRewardScore.objects.filter(reward_model=model).values_list("response_id", "score"))
    margins = [_margin(score, lb) for lb in labels[12:] if lb.choice != "tie"]
    bins: dict[int, list] = {}
    for m in margins:  # confidence max(p, 1 - p), p = sigmoid(margin); ten equal bins over [0.5, 1]
        p = float(expit(m))
        confidence = max(p, 1 - p)
        bins.setdefault(min(int((confidence - 0.5) * 20), 9), []).append((confidence, 1.0 if m > 0 else 0.0))

    client.force_login(people.users["dave"])
    page = client.get(f"/projects/{people.project.pk}/analysis/reward-models/{model.pk}/").content.decode()
    svg = page[page.index('<svg class="reliability-diagram"'):]
    svg = svg[:svg.index("</svg>")]
    assert 'class="diagonal"' in svg
    drawn = re.findall(r'<g class="bin" data-low="([\d.]+)" data-high="[\d.]+" data-count="(\d+)" '
                       r'data-accuracy="([\d.]+)".*?<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"'
                       r'.*?<text class="bin-count"[^>]*>(\d+)</text>', svg, re.S)
    assert len(drawn) == len(bins)
    plot_height = 240 - 52
    for (low, count, accuracy, height, label), k in zip(drawn, sorted(bins)):
        members = bins[k]
        assert float(low) == pytest.approx(0.5 + k / 20)
        assert int(count) == int(label) == len(members)
        assert float(accuracy) == pytest.approx(sum(c for _, c in members) / len(members))
        assert float(height) == pytest.approx(float(accuracy) * plot_height, abs=0.02)
    assert sum(int(c) for _, c, *_ in drawn) == len(margins)


def test_it_replays_the_models_held_out_split_and_scores_exactly_those_labels(client, people, labelled, tmp_path):
    labels, model = labelled
    rows = [{"prompt": lb.comparison.prompt.text, "chosen": f"c{lb.pk}", "rejected": f"r{lb.pk}", "label_id": lb.pk,
             "comparison_id": lb.comparison_id} for lb in labels]
    snapshot = tmp_path / "all.jsonl"
    snapshot.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model.snapshot_path, model.spec = str(snapshot), {"preference_snapshot": str(snapshot), "split_by": "prompt",
                                                      "eval_fraction": 0.3, "seed": 5}
    model.save()
    # the trainer's split, replayed here from the file: whole prompts held out together, seed 5
    _, held_rows = split_held_out([dict(r) for r in rows], 0.3, 5, groups=[r["prompt"] for r in rows])
    held_ids = {r["label_id"] for r in held_rows}
    assert 0 < len(held_ids) < len(labels)
    assert len({r["prompt"] for r in held_rows} & {r["prompt"] for r in rows if r["label_id"] not in held_ids}) == 0

    call = api_client(client, people.users["dave"])
    answer = call("get", f"/api/v1/projects/{people.project.pk}/analysis/reward-models/{model.pk}/evaluation"
                         "?min_pairs=2")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["n_excluded_training"] == len(labels) - len(held_ids) and "split by prompt" in body["split"]
    score = dict(ResponseRewardScore.objects.filter(reward_model=model).values_list("response_id", "score"))
    decisive = [lb for lb in labels if lb.pk in held_ids and lb.choice != "tie"]
    overall = body["evaluation"]["overall"]
    assert overall["n_pairs"] == len(decisive)
    assert overall["n_ties_excluded"] == len(held_ids) - len(decisive)
    assert overall["accuracy"] == pytest.approx(sum(_margin(score, lb) > 0 for lb in decisive) / len(decisive))
