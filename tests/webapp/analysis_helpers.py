"""Shared set-up for the analysis tests: a dataset with several responses per prompt, reward models with
stored scores (what Routing's scoring job records), a rubric, human labels; and independent references
(numpy/scipy from the papers' formulas, not rlcore)."""

from __future__ import annotations

import math

import numpy as np

N_PROMPTS, PER_PROMPT = 6, 4


def scored_project(project, user, *, seed: int = 0):
    """Dataset 'pool' (6 prompts x 4 responses); RMs 'base', 'shifted' (3 x base + a per-prompt shift:
    STARC 0 to base), 'noise' (independent) with stored scores; returns (dataset, responses, models)."""
    from webapp.datasets.models import Dataset, Prompt, Response
    from webapp.jobs.models import Job
    from webapp.routing.models import ResponseRewardScore
    from webapp.training.models import RewardModel

    rng = np.random.default_rng(seed)
    dataset = Dataset.objects.create(project=project, name="pool", source_format="jsonl", status="ready",
                                     created_by=user, row_count=N_PROMPTS, response_count=N_PROMPTS * PER_PROMPT)
    responses = []
    for p in range(N_PROMPTS):
        prompt = Prompt.objects.create(dataset=dataset, source_line=p + 1, text=f"Question {p}?")
        for k in range(PER_PROMPT):
            text = ("Thank you! " if (p + k) % 2 else "") + "word " * (3 + 7 * k + p)
            responses.append(Response.objects.create(prompt=prompt, text=text))
    job = Job.objects.create(project=project, kind="train_reward_model", created_by=user, state="succeeded")
    models = {name: RewardModel.objects.create(project=project, job=job, name=name, path=f"/models/{name}",
                                               backbone="b", snapshot_path="/s.jsonl", spec={})
              for name in ("base", "shifted", "noise")}
    base = rng.normal(size=len(responses))
    shift = {r.prompt_id: float(rng.normal() * 5) for r in responses}
    values = {"base": base, "shifted": [3 * b + shift[r.prompt_id] for b, r in zip(base, responses)],
              "noise": rng.normal(size=len(responses))}
    ResponseRewardScore.objects.bulk_create(
        ResponseRewardScore(response=r, reward_model=models[name], score=float(values[name][i]))
        for name in values for i, r in enumerate(responses))
    return dataset, responses, models


def label_pairs(project, user, responses, choices: list[str]):
    """One comparison per prompt (its first two responses) with a human label each, choices in prompt order."""
    from webapp.annotation.models import Comparison, LabelSource, PreferenceLabel

    by_prompt: dict[int, list] = {}
    for r in responses:
        by_prompt.setdefault(r.prompt_id, []).append(r)
    out = []
    for (prompt_id, rs), choice in zip(by_prompt.items(), choices):
        c = Comparison.objects.create(project=project, prompt_id=prompt_id, response_ids=[rs[0].pk, rs[1].pk])
        PreferenceLabel.objects.create(comparison=c, source=LabelSource.HUMAN, annotator=user, choice=choice,
                                       strength=0 if choice == "tie" else 1)
        out.append((rs[0].pk, rs[1].pk, choice))
    return out


def starc_reference(scores: dict[str, dict[int, float]], prompt_of: dict[int, int]) -> dict[tuple[str, str], float]:
    """Skalse et al.'s STARC in the single-turn case, from its formula: c(R) = R - mean over the prompt's
    responses; n = m = L2 with uniform weight per prompt, then per response; d = ||c1/n(c1) - c2/n(c2)||."""
    prompts = sorted(set(prompt_of.values()))

    def standardised(table):
        c = {}
        for p in prompts:
            ids = [i for i in table if prompt_of[i] == p]
            mean = sum(table[i] for i in ids) / len(ids)
            c.update({i: table[i] - mean for i in ids})
        weight = {i: 1 / (len(prompts) * sum(1 for j in c if prompt_of[j] == prompt_of[i])) for i in c}
        norm = math.sqrt(sum(weight[i] * c[i] ** 2 for i in c))
        return {i: (c[i] / norm if norm > 0 else 0.0) for i in c}, weight

    std = {name: standardised(t) for name, t in scores.items()}
    out = {}
    for a in scores:
        for b in scores:
            (sa, w), (sb, _) = std[a], std[b]
            out[(a, b)] = math.sqrt(sum(w[i] * (sa[i] - sb[i]) ** 2 for i in sa))
    return out


def wilson(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson (1927) score interval, from its formula."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half
