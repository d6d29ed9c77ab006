r"""How reliable each rater is: Dawid-Skene (1979) without gold, and accuracy on gold items.

**Dawid & Skene** ("Maximum Likelihood Estimation of Observer Error-Rates Using the EM Algorithm",
Applied Statistics 28(1), 1979). Each item ``i`` (a comparison) has an unknown true class ``k`` among
the classes seen (``a``, ``b``, ``tie``) with prior ``pi_k``; rater ``r`` reports class ``l`` with
probability ``theta^r_{kl}`` (a confusion matrix per rater, rows = true class). With ``n_irl`` the
number of times rater r gave item i label l, EM alternates

    E:  T_ik  ∝  pi_k * prod_r prod_l (theta^r_kl)^{n_irl}
    M:  pi_k = (1/I) sum_i T_ik,   theta^r_kl = (alpha + sum_i T_ik n_irl) / (L alpha + sum_l' sum_i T_ik n_irl')

starting from the per-item vote shares (the paper's start), until the log-likelihood
``sum_i log sum_k pi_k prod (theta^r_kl)^{n_irl}`` gains less than ``tol`` (relative). ``alpha``
(default 0.01) is a small additive smoothing, not in the paper, that keeps a rater who never used a
label from getting probability 0 for it. A rater's **accuracy** is ``sum_k pi_k theta^r_kk``: the
probability it reports the true class of a random item. Everything is vectorised over labels
(``np.bincount``), so memory and time grow with the number of labels, not raters x items.

**Gold items** carry a known answer ``a`` or ``b``; a rater's gold accuracy is the share of its gold
labels equal to the answer (a ``tie`` given to a gold item counts wrong and is counted), with the
count and a Wilson interval. A gold answer ``tie`` is refused: a tie gold item cannot separate a
careful rater from one who answers tie when unsure.

>>> labels = [RaterLabel(item_id=str(i), rater=r, label=l) for i, votes in enumerate(
...     [("a", "a", "b"), ("b", "b", "b"), ("a", "a", "a"), ("b", "b", "a")]) for r, l in zip("xyz", votes)]
>>> fit = fit_dawid_skene(labels)
>>> fit.classes, [r.rater for r in fit.raters], fit.items[0].label
(['a', 'b'], ['x', 'y', 'z'], 'a')
>>> round(fit.raters[0].accuracy, 3) > round(fit.raters[2].accuracy, 3)
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field
from scipy.special import logsumexp

from rlcore.errors import UserError
from rlcore.training.calibration import wilson_interval

CLASS_ORDER = ("a", "b", "tie")


class RaterLabel(BaseModel):
    item_id: str = Field(description="the comparison labelled")
    rater: str = Field(description="annotator or judge (model version)")
    label: Literal["a", "b", "tie"]


class RaterReliability(BaseModel):
    rater: str
    n_labels: int
    n_items: int
    accuracy: float = Field(description="sum_k pi_k theta_kk: chance of reporting a random item's true class")
    confusion: list[list[float]] = Field(description="theta[k][l]: P(reports class l | true class k), classes order")


class ItemEstimate(BaseModel):
    item_id: str
    label: str = Field(description="the most probable true class")
    probabilities: list[float] = Field(description="posterior T_ik in classes order")
    n_labels: int


class DawidSkeneFit(BaseModel):
    """Per-rater reliability and per-item posteriors, with the counts and how the fit ended."""

    method: str = "Dawid & Skene (1979) EM over class-conditional confusion matrices, vote-share start"
    classes: list[str]
    priors: list[float]
    raters: list[RaterReliability]
    items: list[ItemEstimate]
    n_labels: int
    iterations: int
    converged: bool
    log_likelihood: float
    smoothing: float


def _encode(values: Sequence[str]) -> tuple[list[str], np.ndarray]:
    names, index = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    return [str(n) for n in names], index.astype(np.int64)


def fit_dawid_skene(labels: Sequence[RaterLabel] | None = None, *, item_ids: Sequence[str] | None = None,
                    raters: Sequence[str] | None = None, values: Sequence[str] | None = None,
                    max_iter: int = 200, tol: float = 1e-7, smoothing: float = 0.01) -> DawidSkeneFit:
    """Fit Dawid-Skene to labels given as ``RaterLabel`` objects or as three parallel sequences."""
    if labels is not None:
        item_ids = [x.item_id for x in labels]
        raters = [x.rater for x in labels]
        values = [x.label for x in labels]
    if not item_ids or raters is None or values is None:
        raise UserError("Dawid-Skene needs at least one label")
    if not (len(item_ids) == len(raters) == len(values)):
        raise UserError("item ids, raters and labels must have one entry per label")
    unknown = sorted(set(values) - set(CLASS_ORDER))
    if unknown:
        raise UserError(f"label {unknown[0]!r}: a rater label is one of {', '.join(CLASS_ORDER)}")
    classes = [c for c in CLASS_ORDER if c in set(values)]
    if len(classes) < 2:
        raise UserError(f"every label is {classes[0]!r}: a rater model needs at least two classes in use")
    item_names, item = _encode(item_ids)
    rater_names, rater = _encode(raters)
    lookup = {c: k for k, c in enumerate(classes)}
    label = np.fromiter((lookup[v] for v in values), dtype=np.int64, count=len(values))
    n_items, n_raters, n_classes = len(item_names), len(rater_names), len(classes)

    # start: each item's vote shares
    votes = np.stack([np.bincount(item, weights=(label == k).astype(float), minlength=n_items)
                      for k in range(n_classes)], axis=1)
    posterior = votes / votes.sum(axis=1, keepdims=True)
    previous = -np.inf
    converged = False
    log_likelihood = -np.inf
    rater_class = rater * n_classes + label
    iterations = 0
    for iterations in range(1, max_iter + 1):
        # M step
        priors = posterior.mean(axis=0)
        counts = np.stack([np.bincount(rater_class, weights=posterior[item, k], minlength=n_raters * n_classes)
                           .reshape(n_raters, n_classes) for k in range(n_classes)], axis=1)  # (R, K, L)
        counts += smoothing
        theta = counts / counts.sum(axis=2, keepdims=True)
        # E step
        with np.errstate(divide="ignore"):  # smoothing 0: a label never used has log 0 = -inf
            log_theta = np.log(theta)
        contribution = log_theta[rater, :, label]  # (N, K)
        log_joint = np.log(np.maximum(priors, 1e-300))[None, :] + np.stack(
            [np.bincount(item, weights=contribution[:, k], minlength=n_items) for k in range(n_classes)], axis=1)
        normaliser = logsumexp(log_joint, axis=1, keepdims=True)
        posterior = np.exp(log_joint - normaliser)
        log_likelihood = float(normaliser.sum())
        if np.isfinite(previous) and abs(log_likelihood - previous) <= tol * abs(previous):
            converged = True
            break
        previous = log_likelihood
    priors = posterior.mean(axis=0)
    n_labels_per_rater = np.bincount(rater, minlength=n_raters)
    items_per_rater = np.bincount(np.unique(rater * n_items + item) // n_items, minlength=n_raters)
    accuracy = np.einsum("k,rkk->r", priors, theta)
    labels_per_item = np.bincount(item, minlength=n_items)
    best = posterior.argmax(axis=1)
    return DawidSkeneFit(
        classes=classes, priors=priors.tolist(),
        raters=[RaterReliability(rater=rater_names[r], n_labels=int(n_labels_per_rater[r]),
                                 n_items=int(items_per_rater[r]), accuracy=float(accuracy[r]),
                                 confusion=theta[r].tolist()) for r in range(n_raters)],
        items=[ItemEstimate(item_id=item_names[i], label=classes[best[i]], probabilities=posterior[i].tolist(),
                            n_labels=int(labels_per_item[i])) for i in range(n_items)],
        n_labels=len(label), iterations=iterations, converged=converged, log_likelihood=log_likelihood,
        smoothing=smoothing)


class GoldScore(BaseModel):
    rater: str
    n_gold_labels: int = Field(description="labels this rater gave to gold items")
    n_correct: int
    n_tie_answers: int = Field(description="'tie' given to a gold item: counted wrong")
    accuracy: float
    ci_low: float = Field(description="95% Wilson interval")
    ci_high: float


class GoldScores(BaseModel):
    n_gold_items: int
    n_gold_items_labelled: int
    raters: list[GoldScore]
    raters_without_gold: list[str] = Field(description="raters who labelled no gold item: no score")


def score_gold(labels: Sequence[RaterLabel], gold: Mapping[str, str]) -> GoldScores:
    """Each rater's accuracy on the gold items it labelled, with counts and a Wilson interval."""
    for item_id, answer in gold.items():
        if answer == "tie":
            raise UserError(f"gold item {item_id!r} has answer 'tie': a tie gold item cannot tell a careful rater from "
                            "one who says tie when unsure; give it answer 'a' or 'b', or leave it out of the gold set")
        if answer not in ("a", "b"):
            raise UserError(f"gold item {item_id!r}: answer {answer!r} is not 'a' or 'b'")
    tallies: dict[str, list[int]] = {}  # rater -> [labels, correct, ties]
    labelled_items: set[str] = set()
    raters_seen: list[str] = []
    for x in labels:
        if x.rater not in tallies:
            raters_seen.append(x.rater)
            tallies[x.rater] = [0, 0, 0]
        answer = gold.get(x.item_id)
        if answer is None:
            continue
        labelled_items.add(x.item_id)
        t = tallies[x.rater]
        t[0] += 1
        t[1] += x.label == answer
        t[2] += x.label == "tie"
    scores, without = [], []
    for rater in sorted(raters_seen):
        n, correct, ties = tallies[rater]
        if n == 0:
            without.append(rater)
            continue
        low, high = wilson_interval(correct, n)
        scores.append(GoldScore(rater=rater, n_gold_labels=n, n_correct=correct, n_tie_answers=ties,
                                accuracy=correct / n, ci_low=low, ci_high=high))
    return GoldScores(n_gold_items=len(gold), n_gold_items_labelled=len(labelled_items), raters=scores,
                      raters_without_gold=without)
