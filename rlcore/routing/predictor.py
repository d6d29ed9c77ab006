"""The performance-prediction model of Hybrid Preferences and the routing strategies built on it.

How the paper does it (scripts/get_count_feats.py, train_regressor.py, sample_best_subset.py):

1. Take a pool where every comparison has both a human and an LM label.
2. Simulate many mixes: draw a random human budget, fill it feature group by feature group in a
   random order ("knapsack"), use human labels there and LM labels elsewhere.
3. Train a proxy reward model on each mix and score it (here: accuracy on held-out human labels).
4. Regress the score on the per-feature counts of human-labelled instances (linear or quadratic).
5. ``topk``: an instance's gain is the predicted change from labelling it by a human (for the
   linear model, the sum of the coefficients of its features); take the ``budget`` best.
   ``optimal_pos``: take every instance whose gain is positive (the budget, if given, caps it).

Differences, on purpose: counts are regressed as *shares of the pool* so a model fitted on a
pilot pool applies to a pool of another size; the proxy reward model is a Bradley-Terry logistic
model on pair vectors (e.g. MiniLM embedding differences), fitted with Newton steps in numpy, so a
few hundred simulations take seconds instead of TPU-days.

>>> resolve_budget(Budget(share=0.25), 10), resolve_budget(3, 10), parse_budget("40%")
(2, 3, Budget(share=0.4, count=None))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from rlcore.errors import UserError
from rlcore.routing.features import FeatureTable, RawFeatures

Strategy = Literal["topk", "optimal_pos", "uncertainty", "random"]
STRATEGIES: tuple[str, ...] = ("topk", "optimal_pos", "uncertainty", "random")


# --------------------------------------------------------------------------------------------
# budget
# --------------------------------------------------------------------------------------------


class Budget(BaseModel):
    """How many comparisons go to humans: a share of the pool or a count (exactly one)."""

    share: float | None = Field(default=None, description="Fraction of the comparisons for humans, 0..1.")
    count: int | None = Field(default=None, description="Number of comparisons for humans.")


def parse_budget(text: str) -> Budget:
    """Read a budget as a user types it: ``25%``, ``0.25`` (a share) or ``300`` (a count).

    >>> parse_budget("0.5"), parse_budget("120")
    (Budget(share=0.5, count=None), Budget(share=None, count=120))
    """
    text = text.strip()
    try:
        if text.endswith("%"):
            return Budget(share=float(text[:-1]) / 100.0)
        if "." in text or "e" in text.lower():
            return Budget(share=float(text))
        return Budget(count=int(text))
    except ValueError as exc:
        raise UserError(f"budget: {text!r} is not a share (0.25, 25%) or a count (300)") from exc


def resolve_budget(budget: Budget | int | float, n_comparisons: int) -> int:
    """The number of comparisons for humans; UserError naming the field when out of range.

    >>> resolve_budget(0.5, 7)
    3
    >>> resolve_budget(Budget(count=9), 7)
    Traceback (most recent call last):
    ...
    rlcore.errors.UserError: budget.count: 9 is more than the 7 comparisons in the pool
    """
    if isinstance(budget, bool):
        raise UserError("budget: give a share (0.25) or a count (300), not a boolean")
    if isinstance(budget, int):
        budget = Budget(count=budget)
    elif isinstance(budget, float):
        budget = Budget(share=budget)
    if (budget.share is None) == (budget.count is None):
        raise UserError("budget: set exactly one of budget.share and budget.count")
    if budget.count is not None:
        if budget.count < 0:
            raise UserError(f"budget.count: {budget.count} is below zero")
        if budget.count > n_comparisons:
            raise UserError(f"budget.count: {budget.count} is more than the {n_comparisons} comparisons in the pool")
        return budget.count
    share = budget.share
    if share is None or math.isnan(share) or share < 0:
        raise UserError(f"budget.share: {share} is below zero")
    if share > 1:
        raise UserError(f"budget.share: {share} is above 1 (100 % of the {n_comparisons} comparisons)")
    return int(math.floor(share * n_comparisons + 1e-9))


# --------------------------------------------------------------------------------------------
# proxy reward model
# --------------------------------------------------------------------------------------------


def fit_bradley_terry(
    vectors: np.ndarray,
    targets: np.ndarray,
    l2: float = 1.0,
    iterations: int = 20,
    tol: float = 1e-6,
    init: np.ndarray | None = None,
) -> np.ndarray:
    """Logistic Bradley-Terry weights w with P(A preferred) = sigmoid(w . (phi(A) - phi(B))).

    ``vectors`` are pair vectors phi(A) - phi(B); ``targets`` are 1 (A), 0 (B) or 0.5 (tie).
    L2-penalised, fitted by Newton's method (warm-started from ``init`` when given); no
    intercept (swapping A and B flips the sign).

    >>> x = np.array([[1.0], [2.0], [-1.0], [-2.0], [0.5]]); y = np.array([1, 1, 0, 0, 0.0])
    >>> w = fit_bradley_terry(x, y, l2=0.1); bool(w[0] > 0)
    True
    """
    n, d = vectors.shape
    w = np.zeros(d) if init is None else np.array(init, dtype=float)
    if n == 0:
        return w
    eye = np.eye(d) * l2

    def loss(weights: np.ndarray) -> float:
        z = vectors @ weights
        # soft-target logistic loss, stable: log(1 + e^z) - t z
        return float(np.sum(np.logaddexp(0.0, z) - targets * z) + 0.5 * l2 * weights @ weights)

    current = loss(w)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(vectors @ w, -30, 30)))
        grad = vectors.T @ (p - targets) + l2 * w
        hess = (vectors * (p * (1 - p))[:, None]).T @ vectors + eye
        step = np.linalg.solve(hess, grad)
        # backtracking: a full Newton step can overshoot far from the optimum (e.g. a warm start)
        scale = 1.0
        for _ in range(30):
            candidate = w - scale * step
            value = loss(candidate)
            if value <= current + 1e-12:
                break
            scale *= 0.5
        else:
            break
        w, current = candidate, value
        if np.max(np.abs(scale * step)) < tol:
            break
    return w


def pairwise_accuracy(weights: np.ndarray, vectors: np.ndarray, targets: np.ndarray) -> float:
    """Share of non-tie pairs the model orders like ``targets`` (a zero score counts as half).

    >>> pairwise_accuracy(np.array([1.0]), np.array([[1.0], [-1.0], [2.0], [0.0]]), np.array([1, 0, 0, 1.0]))
    0.625
    """
    keep = targets != 0.5
    if not keep.any():
        return float("nan")
    scores = vectors[keep] @ weights
    wins = np.where(targets[keep] == 1.0, scores > 0, scores < 0).astype(float)
    wins[scores == 0] = 0.5
    return float(wins.mean())


def project_vectors(vectors: np.ndarray, max_dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Project pair vectors on their top principal directions (uncentred, so A/B symmetry holds).

    Returns (projected vectors, projection matrix d x k).
    """
    if vectors.shape[1] <= max_dims:
        return vectors, np.eye(vectors.shape[1])
    _, _, vt = np.linalg.svd(vectors, full_matrices=False)
    basis = vt[:max_dims].T
    return vectors @ basis, basis


# --------------------------------------------------------------------------------------------
# simulation
# --------------------------------------------------------------------------------------------


class LabelledPool(BaseModel):
    """Comparisons that have both a human and an LM label, to fit the performance model on."""

    comparison_ids: list[str] = Field(description="Ids, in the order of the feature table's pool.")
    human: list[float] = Field(description="Human label per comparison: 1 = A better, 0 = B better, 0.5 = tie.")
    lm: list[float] = Field(description="LM judge label per comparison, same coding.")


class Simulations(BaseModel):
    """Simulated human/LM mixes and how well the proxy reward model did on each."""

    feature_names: list[str] = Field(description="Columns of `shares`.")
    shares: list[list[float]] = Field(description="Per mix: human-labelled instances with each feature / pool size.")
    budgets: list[int] = Field(description="Per mix: number of human labels.")
    scores: list[float] = Field(description="Per mix: proxy reward model accuracy on held-out human labels.")
    n_train: int = Field(description="Size of the pool the mixes were drawn from.")
    n_dev: int = Field(description="Human labels (non-tie) that scored each mix out of fold.")


def knapsack_mix(budget: int, members: Sequence[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """The paper's ``run_knapsack``: visit feature groups in random order, take their members in
    random order until ``budget`` distinct instances are chosen; top up at random if groups run out.

    >>> mix = knapsack_mix(3, [np.array([0, 1]), np.array([2, 3, 4])], 6, np.random.default_rng(0))
    >>> len(mix), len(set(mix.tolist()))
    (3, 3)
    """
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    for g in rng.permutation(len(members)):
        for i in rng.permutation(members[g]):
            if len(chosen) >= budget:
                return np.array(chosen, dtype=int)
            if not taken[i]:
                taken[i] = True
                chosen.append(int(i))
    rest = rng.permutation(np.flatnonzero(~taken))[: budget - len(chosen)]
    return np.array(chosen + rest.tolist(), dtype=int)


def tilted_mix(budget: int, features: np.ndarray, rng: np.random.Generator, spread: float = 1.5) -> np.ndarray:
    """A mix whose feature shares vary independently: every feature gets a random log-weight,
    an instance's priority is the sum of its features' weights plus Gumbel noise, and the
    ``budget`` highest priorities go to humans. (A random-design complement to the knapsack,
    which mostly moves one feature at a time.)

    >>> mix = tilted_mix(2, np.eye(4), np.random.default_rng(0))
    >>> len(mix), len(set(mix.tolist()))
    (2, 2)
    """
    tilt = rng.normal(0.0, spread, size=features.shape[1])
    priority = features @ tilt + rng.gumbel(size=features.shape[0])
    return np.argsort(-priority)[:budget]


def simulate_mixes(
    features: np.ndarray,
    feature_names: Sequence[str],
    pool: LabelledPool,
    vectors: np.ndarray,
    *,
    n_simulations: int = 300,
    folds: int = 3,
    l2: float = 1.0,
    max_dims: int = 128,
    sampler: Literal["knapsack", "tilted", "both"] = "both",
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Simulations:
    """Simulate ``n_simulations`` mixes at random budgets and score a proxy reward model on each.

    ``features`` is the pool's 0/1 feature matrix, ``vectors`` its pair vectors (one row per
    comparison). Each mix is drawn over the whole pool (paper's knapsack at a random budget) and
    scored by cross-fitting: for each of ``folds`` folds a proxy RM is trained on the mix's labels
    of the other folds and judged against the human labels of the held-out fold, so every human
    label in the pool scores every mix (a single dev split makes the scores too noisy to regress
    on). ``folds=1`` is not allowed: a mix must never be scored on its own training labels.
    ``sampler`` draws mixes with :func:`knapsack_mix` (the paper), :func:`tilted_mix`, or
    alternates between them. ``progress(done, total)`` is called after each mix.
    """
    if sampler not in ("knapsack", "tilted", "both"):
        raise UserError(f"sampler: {sampler!r} is not one of knapsack, tilted, both")
    n = len(pool.comparison_ids)
    if not (features.shape[0] == vectors.shape[0] == len(pool.human) == len(pool.lm) == n):
        raise UserError(
            f"pool: {n} ids, {len(pool.human)} human and {len(pool.lm)} LM labels, "
            f"{features.shape[0]} feature rows and {vectors.shape[0]} vectors must all match"
        )
    if n < 10:
        raise UserError(f"pool: need at least 10 comparisons with both a human and an LM label, got {n}")
    if folds < 2:
        raise UserError(f"folds: need at least 2 folds to score mixes on held-out labels, got {folds}")
    rng = np.random.default_rng(seed)
    human, lm = np.asarray(pool.human, float), np.asarray(pool.lm, float)
    fold_of = rng.permutation(n) % folds
    splits = []
    for f in range(folds):
        train, dev = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
        vec_train, basis = project_vectors(vectors[train], max_dims)
        # the all-LM fit warm-starts every mix's fit: mixes differ from it in a few labels
        start = fit_bradley_terry(vec_train, lm[train], l2=l2)
        splits.append((train, dev, vec_train, vectors[dev] @ basis, start))
    scored = human != 0.5
    members = [np.flatnonzero(features[:, j]) for j in range(features.shape[1])]
    members = [m for m in members if len(m)]
    shares, budgets, scores = [], [], []
    for sim in range(n_simulations):
        budget = int(rng.integers(0, n + 1))
        if sampler == "knapsack" or (sampler == "both" and sim % 2 == 0):
            chosen = knapsack_mix(budget, members, n, rng)
        else:
            chosen = tilted_mix(budget, features, rng)
        labels = lm.copy()
        labels[chosen] = human[chosen]
        right = 0.0
        for train, dev, vec_train, vec_dev, start in splits:
            w = fit_bradley_terry(vec_train, labels[train], l2=l2, init=start, tol=1e-4)
            right += pairwise_accuracy(w, vec_dev, human[dev]) * scored[dev].sum()
        scores.append(right / max(scored.sum(), 1))
        shares.append((features[chosen].sum(axis=0) / n).tolist())
        budgets.append(budget)
        if progress is not None:
            progress(sim + 1, n_simulations)
    return Simulations(
        feature_names=list(feature_names), shares=shares, budgets=budgets, scores=scores, n_train=n,
        n_dev=int(scored.sum()),
    )


# --------------------------------------------------------------------------------------------
# regression
# --------------------------------------------------------------------------------------------


class PerformanceModel(BaseModel):
    """Predicted proxy-RM score as a function of the shares of human-labelled instances per feature."""

    kind: Literal["linear", "quadratic"] = Field(description="Linear in the shares, or with all pairwise products.")
    feature_names: list[str] = Field(description="Input features, in order.")
    intercept: float = Field(description="Predicted score with no human labels (all LM).")
    coef: list[float] = Field(description="Linear coefficients, one per feature.")
    quad: list[list[float]] = Field(
        default_factory=list, description="Quadratic kind only: symmetric matrix Q, prediction adds x.Q.x."
    )
    ridge: float = Field(description="L2 penalty used in the fit.")
    n_simulations: int = Field(description="Simulated mixes it was fitted on.")
    holdout_r2: float | None = Field(
        default=None,
        description="R^2 cross-validated on the pilot: each half of the pilot's comparisons has its own model "
        "(``halves``), which predicts the simulated scores of the other half's mixes; pooled over both. None "
        "without halves or when the scores do not vary.",
    )
    n_pool: int | None = Field(default=None, description="Pilot comparisons (both labels) the mixes were drawn from.")
    n_scored: int | None = Field(default=None, description="Non-tie human labels of the pilot that scored each mix.")
    simulations: Simulations | None = Field(
        default=None, description="The mixes it was fitted on; a plan bootstraps its predicted gain from them."
    )
    halves: list[PerformanceModel] = Field(
        default_factory=list,
        description="Pairs of models (halves[2r], halves[2r+1]), each fitted on mixes of one half of the pilot's "
        "comparisons in split r: a plan's gain is judged by the half that did not choose it (check_evidence).",
    )

    def predict(self, shares: np.ndarray) -> np.ndarray:
        """Predicted score for rows of shares (or one row)."""
        x = np.atleast_2d(np.asarray(shares, float))
        out = self.intercept + x @ np.asarray(self.coef)
        if self.kind == "quadratic":
            out = out + np.einsum("ij,jk,ik->i", x, np.asarray(self.quad), x)
        return out


def _design(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "linear":
        return x
    iu = np.triu_indices(x.shape[1])
    return np.hstack([x, (x[:, :, None] * x[:, None, :])[:, iu[0], iu[1]]])


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
    """Ridge regression with an unpenalised intercept, on columns scaled to unit std."""
    mx, my = x.mean(0), y.mean()
    scale = x.std(0)
    scale[scale == 0] = 1.0
    xs = (x - mx) / scale
    w = np.linalg.solve(xs.T @ xs + lam * np.eye(x.shape[1]), xs.T @ (y - my)) / scale
    return float(my - mx @ w), w


def fit_performance_model(
    sims: Simulations, kind: Literal["linear", "quadratic"] = "linear", ridge: float = 1.0, seed: int = 0
) -> PerformanceModel:
    """Regress the simulated scores on the human-label shares (paper: ``train_regressor.py``).

    The model keeps its simulations, so a plan can put a bootstrap interval on the gain it
    predicts. Its ``holdout_r2`` is set by :func:`fit_routing_model`, which cross-validates on the
    pilot's comparisons (R^2 over the same simulations would mostly measure the budget effect).
    """
    x = np.asarray(sims.shares, float)
    y = np.asarray(sims.scores, float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(y) < 5:
        raise UserError(f"simulations: only {len(y)} usable mixes; raise n_simulations")
    b0, w = _ridge(_design(x, kind), y, ridge)
    f = x.shape[1]
    coef, quad = w[:f], []
    if kind == "quadratic":
        q = np.zeros((f, f))
        iu = np.triu_indices(f)
        q[iu] = w[f:]
        quad = ((q + q.T) / 2).tolist()  # x.Q.x with Q symmetric == sum over i<=j of w_ij x_i x_j
    kept = Simulations(
        feature_names=list(sims.feature_names), shares=x.tolist(),
        budgets=[b for b, good in zip(sims.budgets, ok) if good], scores=y.tolist(), n_train=sims.n_train,
        n_dev=sims.n_dev,
    )
    return PerformanceModel(
        kind=kind, feature_names=list(sims.feature_names), intercept=b0, coef=coef.tolist(), quad=quad,
        ridge=ridge, n_simulations=len(y), n_pool=sims.n_train, n_scored=sims.n_dev, simulations=kept,
    )


def pilot_halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two halves of a pilot of ``n`` comparisons: ``np.random.default_rng(seed).permutation(n)``
    cut in the middle (indices sorted)."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def transfer_r2(halves: Sequence[PerformanceModel]) -> float | None:
    """R^2 (as ``sklearn.metrics.r2_score``) of each half's model predicting the other half's
    simulated scores (both directions of every split), pooled, each prediction shifted to the other half's mean
    score (halves differ in level; routing uses only the slopes). None when the scores do not vary."""
    ys, predictions = [], []
    pairs = [(halves[i + d], halves[i + 1 - d]) for i in range(0, len(halves) - 1, 2) for d in (0, 1)]
    for judge, other in pairs:
        sims = other.simulations
        shares = _aligned_shares(judge, sims.feature_names, np.asarray(sims.shares, float))
        y, p = np.asarray(sims.scores, float), judge.predict(shares)
        ys.append(y)
        # Levels differ between halves (each half's all-LM accuracy); routing uses only the slopes.
        predictions.append(p - p.mean() + y.mean())
    y, p = np.concatenate(ys), np.concatenate(predictions)
    total = float(np.sum((y - y.mean()) ** 2))
    return float(1 - np.sum((y - p) ** 2) / total) if total > 0 else None


def _aligned_shares(model: PerformanceModel, names: Sequence[str], shares: np.ndarray) -> np.ndarray:
    col = {name: j for j, name in enumerate(names)}
    out = np.zeros((shares.shape[0], len(model.feature_names)))
    for k, name in enumerate(model.feature_names):
        if name in col:
            out[:, k] = shares[:, col[name]]
    return out


def fit_routing_model(
    features: np.ndarray,
    feature_names: Sequence[str],
    pool: LabelledPool,
    vectors: np.ndarray,
    *,
    n_simulations: int = 300,
    kind: Literal["linear", "quadratic"] = "linear",
    ridge: float = 1.0,
    seed: int = 0,
    splits: int = 3,
    progress: Callable[[int, int], None] | None = None,
    **simulate_kwargs,
) -> PerformanceModel:
    """The performance model a plan routes with, plus what it takes to check it on the pilot.

    The routing model is fitted on ``n_simulations`` mixes of the whole pilot. The pilot's
    comparisons are also cut in two halves ``splits`` times (:func:`pilot_halves` with seeds
    ``seed + 1000 * r``), each half with ``n_simulations // 2`` mixes and a model of its own: a
    model can only be trusted with what it predicts for comparisons it was not fitted on, because on
    a small pilot the features look helpful wherever this pilot's LM labels happen to be wrong.
    ``holdout_r2`` is :func:`transfer_r2` of the halves. ``progress(done, total)`` counts the mixes
    of every fit. A pilot under 20 comparisons gets no halves (and no learned plan passes the gate).
    """
    n = len(pool.comparison_ids)
    half_sims = max(n_simulations // 2, 20)
    total = n_simulations + 2 * splits * half_sims

    def step(offset: int):
        if progress is None:
            return None
        return lambda d, _t: progress(offset + d, total)

    sims = simulate_mixes(features, feature_names, pool, vectors, n_simulations=n_simulations, seed=seed,
                          progress=step(0), **simulate_kwargs)
    model = fit_performance_model(sims, kind=kind, ridge=ridge, seed=seed)
    halves = []
    if n >= 20:  # each half needs the 10 comparisons simulate_mixes asks for
        for r in range(splits):
            for h, part in enumerate(pilot_halves(n, seed + 1000 * r)):
                sub = LabelledPool(comparison_ids=[pool.comparison_ids[i] for i in part],
                                   human=[pool.human[i] for i in part], lm=[pool.lm[i] for i in part])
                done = n_simulations + (2 * r + h) * half_sims
                half = simulate_mixes(features[part], feature_names, sub, vectors[part], n_simulations=half_sims,
                                      seed=seed + 1 + 2 * r + h, progress=step(done), **simulate_kwargs)
                halves.append(fit_performance_model(half, kind=kind, ridge=ridge, seed=seed))
    return model.model_copy(update={"halves": halves, "holdout_r2": transfer_r2(halves) if halves else None})


def cross_fitted_gain(
    judges: Sequence[PerformanceModel],
    deltas: Sequence[np.ndarray],
    *,
    n_bootstrap: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float | None, float | None, list[float]]:
    """The mean over linear ``judges`` of coef . delta (``deltas[i]``: shares of a human set chosen
    by the *other* half's model minus those of a random set of that size, in judge i's features),
    with a normal interval ``gain +- z * sqrt(s_boot^2 + s_g^2 / 2)``:

    - ``s_boot``: the standard deviation of the mean gain when each judge's simulations are
      resampled with replacement and its ridge refitted (the regression's own noise);
    - ``s_g^2``: the sample variance (ddof=1) of the per-judge gains: the pilot's sampling noise,
      which no resampling of one pilot's mixes shows. Halved as for the mean of one split's two
      independent halves; several splits overlap, so they are not counted as more.

    Returns (gain, low, high, per-judge gains); low/high are None when a judge kept no simulations.
    """
    if any(j.kind != "linear" for j in judges):
        raise UserError("model: the gain interval needs a linear performance model (fit with --kind linear)")
    each = [float(np.asarray(j.coef) @ d) for j, d in zip(judges, deltas)]
    gain = float(np.mean(each))
    if any(j.simulations is None or len(j.simulations.scores) < 5 for j in judges):
        return gain, None, None, each
    data = [(np.asarray(j.simulations.shares, float), np.asarray(j.simulations.scores, float)) for j in judges]
    rng = np.random.default_rng(seed)
    draws = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        total = 0.0
        for (x, y), judge, delta in zip(data, judges, deltas):
            idx = rng.integers(0, len(y), len(y))
            _, w = _ridge(x[idx], y[idx], judge.ridge)
            total += float(delta @ w)
        draws[b] = total / len(judges)
    spread = float(np.var(each, ddof=1)) / 2 if len(each) > 1 else 0.0
    half_width = _normal_quantile((1 + level) / 2) * math.sqrt(float(np.var(draws, ddof=1)) + spread)
    return gain, gain - half_width, gain + half_width, each


def _normal_quantile(p: float) -> float:
    """Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9).

    >>> round(_normal_quantile(0.975), 6)
    1.959964
    """
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - 0.02425:
        return -_normal_quantile(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


# --------------------------------------------------------------------------------------------
# routing plan
# --------------------------------------------------------------------------------------------


class FeatureContribution(BaseModel):
    """One feature's part in an instance's routing score."""

    feature: str = Field(description="Binned feature name, e.g. 'category=math'.")
    contribution: float = Field(description="Change in the score this feature accounts for.")


class RoutingReason(BaseModel):
    """Why one comparison went where it went."""

    comparison_id: str = Field(description="The comparison.")
    route: Literal["human", "lm"] = Field(description="Where it goes.")
    score: float = Field(description="Its ranking score: predicted gain (topk/optimal_pos), uncertainty, or a random draw.")
    top_features: list[FeatureContribution] = Field(description="Features that contributed most, largest first.")


class RoutingGate(BaseModel):
    """What a performance model must show before ``topk`` / ``optimal_pos`` may route a pool.

    On a small pilot the learned router is often no better than random (the mixes' scores are
    mostly noise, and the instances with the largest predicted gain are the ones whose
    coefficients are overestimated), so a learned plan is offered only when the model earns it.
    """

    min_pilot: int = Field(default=100, description="Fewest pilot comparisons (human and LM label) behind the model.")
    min_r2: float = Field(
        default=0.0,
        description="Lowest R^2 cross-validated on the pilot's halves: above 0, each half's model predicts the "
        "other half's mixes better than their mean. (Half-pilot mixes are noisy: on the bench's 800-comparison "
        "pilot it is 0.05 on average while topk beats random on every seed.)",
    )
    level: float = Field(default=0.95, description="Confidence level of the bootstrap interval on the gain.")
    n_bootstrap: int = Field(default=200, description="Bootstrap resamples of the simulations.")
    fallback: Literal["random", "uncertainty"] = Field(
        default="random", description="Baseline used when the evidence is not there."
    )


class RoutingEvidence(BaseModel):
    """What a learned plan's predicted gain rests on, and whether it passed the gate."""

    strategy: Literal["topk", "optimal_pos"] = Field(description="The learned strategy that was checked.")
    n_human: int = Field(description="Comparisons the learned strategy would send to people.")
    n_pilot: int | None = Field(description="Pilot comparisons with both a human and an LM label.")
    n_pilot_scored: int | None = Field(description="Non-tie human labels of the pilot that scored each mix.")
    n_simulations: int = Field(description="Simulated mixes the performance model was fitted on.")
    cv_r2: float | None = Field(description="R^2 of the performance model cross-validated on the pilot's halves.")
    gain_in_sample: float | None = Field(
        description="What the routing model predicts for its own human set over random (optimistic: same pilot)."
    )
    gain_over_random: float | None = Field(
        description="Held-out predicted accuracy of a learned human set minus a random one of the same size "
        "(cross-fitted on the pilot's halves); None without halves."
    )
    gain_by_half: list[float] = Field(
        default_factory=list, description="The cross-fitted estimates, two per split (one half judging the other's choice)."
    )
    interval_low: float | None = Field(description="Lower end of the interval on gain_over_random (cross_fitted_gain).")
    interval_high: float | None = Field(description="Upper end of the bootstrap interval on gain_over_random.")
    level: float = Field(description="Confidence level of the interval.")
    n_bootstrap: int = Field(description="Bootstrap resamples of the simulations behind the interval.")
    passed: bool = Field(description="True when every condition of the gate holds.")
    failures: list[str] = Field(default_factory=list, description="Each condition that did not hold, in words.")


class RoutingPlan(BaseModel):
    """Which comparisons go to humans and which to the LM judge, and why."""

    strategy: Strategy = Field(description="The strategy that routed this plan: topk, optimal_pos, uncertainty or random.")
    requested_strategy: Strategy | None = Field(
        default=None, description="The strategy asked for; differs from strategy when the gate fell back."
    )
    fallback_reason: str | None = Field(default=None, description="Why a learned strategy was not used; None when it was.")
    evidence: RoutingEvidence | None = Field(
        default=None, description="topk / optimal_pos: the predicted gain over random with its interval and counts."
    )
    budget: int | None = Field(description="Human budget resolved to a count; None when optimal_pos ran without one.")
    n_total: int = Field(description="Comparisons in the pool.")
    n_human: int = Field(description="Comparisons routed to humans.")
    n_lm: int = Field(description="Comparisons routed to the LM judge.")
    human_ids: list[str] = Field(description="Comparison ids for the human annotation queue, best first.")
    lm_ids: list[str] = Field(description="Comparison ids for LM labelling.")
    predicted_score: float | None = Field(description="Predicted proxy-RM accuracy for this mix (needs a performance model).")
    predicted_score_all_lm: float | None = Field(description="Predicted accuracy with LM labels only.")
    predicted_gain: float | None = Field(description="predicted_score - predicted_score_all_lm.")
    reasons: list[RoutingReason] = Field(description="One per comparison, in pool order.")


def instance_gains(model: PerformanceModel, table: FeatureTable) -> np.ndarray:
    """Predicted gain of giving each comparison to a human (paper: ``compute_gain_linear`` /
    ``compute_gain_quadratic``), with one instance worth 1 / pool size of a share."""
    x = _aligned_matrix(model, table) / max(len(table.raw), 1)
    base = model.predict(np.zeros((1, x.shape[1])))[0]
    return model.predict(x) - base


def _aligned_matrix(model: PerformanceModel, table: FeatureTable) -> np.ndarray:
    col = {name: j for j, name in enumerate(table.feature_names)}
    m = table.matrix()
    out = np.zeros((m.shape[0], len(model.feature_names)))
    for k, name in enumerate(model.feature_names):
        if name in col:
            out[:, k] = m[:, col[name]]
    return out


def _contributions(model: PerformanceModel, x: np.ndarray, n: int, top: int) -> list[list[FeatureContribution]]:
    """Per row: gain(x) - gain(x without feature f), largest |value| first."""
    out = []
    full = model.predict(x / n)
    for i, row in enumerate(x):
        on = np.flatnonzero(row)
        if len(on) == 0:
            out.append([])
            continue
        without = np.repeat(row[None, :], len(on), axis=0)
        without[np.arange(len(on)), on] = 0.0
        delta = full[i] - model.predict(without / n)
        best = np.argsort(-np.abs(delta))[:top]
        out.append([FeatureContribution(feature=model.feature_names[on[b]], contribution=float(delta[b])) for b in best])
    return out


def uncertainty_scores(raw: Sequence[RawFeatures]) -> tuple[np.ndarray, list[list[FeatureContribution]]]:
    """A simple baseline: mean of the available doubt signals, each in 0..1 — judge orders
    disagree (0/1), 1 - judge confidence, reward ensembles disagree on the sign (0/1), and the
    percentile rank of the ensemble's margin std. Comparisons with no signal score 0.5.

    >>> r = [RawFeatures(comparison_id=i, prompt_len=1, len_shorter=1, len_longer=1, token_len_diff=0,
    ...                  rouge_l=1.0, token_overlap=1.0, judge_position_disagreement=d, judge_confidence=c)
    ...      for i, d, c in [("a", False, 0.9), ("b", True, 0.6)]]
    >>> [round(float(s), 2) for s in uncertainty_scores(r)[0]]
    [0.05, 0.7]
    """
    stds = np.array([r.rm_disagreement if r.rm_disagreement is not None else np.nan for r in raw], float)
    known = np.isfinite(stds)
    ranks = np.full(len(raw), np.nan)
    if known.sum() > 1:
        ranks[known] = (np.argsort(np.argsort(stds[known])) / (known.sum() - 1)).astype(float)
    scores, reasons = np.zeros(len(raw)), []
    for i, r in enumerate(raw):
        parts = {}
        if r.judge_position_disagreement is not None:
            parts["judge_position_disagreement"] = float(r.judge_position_disagreement)
        if r.judge_confidence is not None:
            parts["judge_confidence"] = 1.0 - r.judge_confidence
        if r.rm_sign_disagreement is not None:
            parts["rm_sign_disagreement"] = float(r.rm_sign_disagreement)
        if np.isfinite(ranks[i]):
            parts["rm_disagreement"] = float(ranks[i])
        scores[i] = float(np.mean(list(parts.values()))) if parts else 0.5
        ordered = sorted(parts.items(), key=lambda kv: -kv[1])
        reasons.append([FeatureContribution(feature=k, contribution=v / len(parts)) for k, v in ordered if v > 0])
    return scores, reasons


def _shares_delta(model: PerformanceModel, table: FeatureTable, human: np.ndarray) -> np.ndarray:
    """Shares of ``human`` (indices) minus the expected shares of a uniform draw of the same size."""
    x = _aligned_matrix(model, table)
    n = max(x.shape[0], 1)
    mask = np.zeros(x.shape[0])
    mask[human] = 1.0
    return (mask @ x) / n - (len(human) / n) * x.mean(axis=0)


def check_evidence(
    model: PerformanceModel, table: FeatureTable, human: np.ndarray, strategy: str, gate: RoutingGate, seed: int = 0
) -> RoutingEvidence:
    """Judge a learned plan of ``len(human)`` comparisons on what the pilot can show.

    The gain over random is cross-fitted: in each split, each pilot half's model picks its own top
    comparisons of the pool (as many as the plan sends to people), and the *other* half's model
    predicts how much better that set does than a random one of the same size; all are averaged. A model judging
    its own choice would credit the chance wins of its pilot (the winner's curse).
    """
    own = float(np.asarray(model.coef) @ _shares_delta(model, table, human)) if model.kind == "linear" else None
    gain = low = high = None
    each: list[float] = []
    if len(model.halves) >= 2 and model.kind == "linear":
        rng = np.random.default_rng(seed)
        judges, deltas = [], []
        for h in range(len(model.halves) - len(model.halves) % 2):
            _, _, chosen = _rank("topk", table, len(human), model.halves[h], rng, 0)
            judge = model.halves[h + 1 if h % 2 == 0 else h - 1]
            judges.append(judge)
            deltas.append(_shares_delta(judge, table, chosen))
        gain, low, high, each = cross_fitted_gain(
            judges, deltas, n_bootstrap=gate.n_bootstrap, level=gate.level, seed=seed
        )
    failures = []
    if model.n_pool is None or model.n_pool < gate.min_pilot:
        failures.append(
            f"the performance model rests on {model.n_pool if model.n_pool is not None else 'an unknown number of'} "
            f"pilot comparisons with both a human and an LM label; at least {gate.min_pilot} are needed"
        )
    if model.holdout_r2 is None or model.holdout_r2 <= gate.min_r2:
        r2 = ("not measured (no pilot halves: refit the model)" if not model.halves
              else "undefined (the simulated scores do not vary)" if model.holdout_r2 is None
              else f"{model.holdout_r2:.2f}")
        failures.append(f"its R² cross-validated on the pilot is {r2} (above {gate.min_r2:.2f} needed)")
    if model.kind != "linear":
        failures.append("a quadratic performance model has no held-out gain estimate (fit a linear one)")
    elif low is None:
        if model.halves:
            failures.append("the model keeps no simulations to put an interval on its gain (refit it)")
    elif low <= 0:
        failures.append(
            f"the held-out predicted gain over random, {gain:+.3f} ({gate.level:.0%} interval {low:+.3f} to "
            f"{high:+.3f}), is not above zero"
        )
    return RoutingEvidence(
        strategy=strategy, n_human=len(human), n_pilot=model.n_pool, n_pilot_scored=model.n_scored,
        n_simulations=model.n_simulations, cv_r2=model.holdout_r2, gain_in_sample=own, gain_over_random=gain,
        gain_by_half=each,
        interval_low=low, interval_high=high, level=gate.level, n_bootstrap=gate.n_bootstrap,
        passed=not failures, failures=failures,
    )


def _rank(strategy: str, table: FeatureTable, k: int | None, model: PerformanceModel | None,
          rng: np.random.Generator, top_features: int):
    n = len(table.raw)
    if strategy in ("topk", "optimal_pos"):
        scores = instance_gains(model, table)
        why = (_contributions(model, _aligned_matrix(model, table), max(n, 1), top_features) if top_features
               else [[] for _ in range(n)])
    elif strategy == "uncertainty":
        scores, why = uncertainty_scores(table.raw)
    else:
        scores = rng.random(n)
        why = [[] for _ in range(n)]
    tiebreak = rng.random(n)
    ranked = np.lexsort((tiebreak, -scores))  # by score descending, random among equals
    if strategy == "optimal_pos":
        ranked = ranked[scores[ranked] > 0]
    return scores, why, ranked if k is None else ranked[:k]


def plan_routing(
    table: FeatureTable,
    budget: Budget | int | float | None,
    strategy: Strategy = "topk",
    model: PerformanceModel | None = None,
    seed: int = 0,
    top_features: int = 3,
    gate: RoutingGate | None = RoutingGate(),
) -> RoutingPlan:
    """Route a pool: ``budget`` comparisons to humans, the rest to the LM judge.

    ``topk`` and ``optimal_pos`` need a fitted :class:`PerformanceModel`; ``optimal_pos`` takes
    every comparison with a positive predicted gain (capped by the budget when one is given).
    Either is used only when the model passes ``gate`` (pilot size, cross-validated R^2, and a
    bootstrap interval on the gain over random that lies above zero); otherwise the plan is routed
    by ``gate.fallback`` for the same number of comparisons and says why. ``gate=None`` skips the
    check (the evidence is still reported). ``uncertainty`` ranks by :func:`uncertainty_scores`;
    ``random`` draws uniformly (seeded). Ties are broken at random, so equal scores do not favour
    pool order.
    """
    if strategy not in STRATEGIES:
        raise UserError(f"strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    n = len(table.raw)
    ids = table.ids
    rng = np.random.default_rng(seed)
    if budget is None and strategy != "optimal_pos":
        raise UserError(f"budget: strategy {strategy!r} needs a budget (a share or a count)")
    k = None if budget is None else resolve_budget(budget, n)
    if strategy in ("topk", "optimal_pos") and model is None:
        raise UserError(f"model: strategy {strategy!r} needs a fitted performance model (routing fit)")
    scores, why, ranked = _rank(strategy, table, k, model, rng, top_features)
    used, evidence, fallback_reason = strategy, None, None
    if strategy in ("topk", "optimal_pos"):
        evidence = check_evidence(model, table, ranked, strategy, gate or RoutingGate(), seed=seed)
        if gate is not None and not evidence.passed:
            used = gate.fallback
            fallback_reason = (f"{strategy} was not used: " + "; ".join(evidence.failures)
                               + f". Routed by {used} instead, for the same {len(ranked)} comparisons.")
            scores, why, ranked = _rank(used, table, len(ranked), None, rng, top_features)
    human = set(ranked.tolist())
    predicted = predicted_all_lm = gain = None
    if model is not None:
        x = _aligned_matrix(model, table)
        mask = np.zeros(n)
        mask[list(human)] = 1.0
        predicted = float(model.predict((mask @ x) / max(n, 1))[0])
        predicted_all_lm = float(model.intercept)
        gain = predicted - predicted_all_lm
    reasons = [
        RoutingReason(
            comparison_id=ids[i], route="human" if i in human else "lm", score=float(scores[i]), top_features=why[i]
        )
        for i in range(n)
    ]
    return RoutingPlan(
        strategy=used, requested_strategy=strategy, fallback_reason=fallback_reason, evidence=evidence, budget=k,
        n_total=n, n_human=len(human), n_lm=n - len(human),
        human_ids=[ids[i] for i in ranked], lm_ids=[ids[i] for i in range(n) if i not in human],
        predicted_score=predicted, predicted_score_all_lm=predicted_all_lm, predicted_gain=gain, reasons=reasons,
    )


def plan_summary(plan: RoutingPlan) -> str:
    """One line for people: where the plan sends what, and what its predicted gain rests on."""
    head = f"{plan.strategy}: {plan.n_human} of {plan.n_total} comparisons to people, {plan.n_lm} to the LM judge"
    head += "."
    if plan.fallback_reason:
        head += f" {plan.fallback_reason}"
    ev = plan.evidence
    if ev is None:
        return head
    interval = (f"{ev.level:.0%} interval {ev.interval_low:+.3f} to {ev.interval_high:+.3f}"
                if ev.interval_low is not None else "no interval")
    r2 = "n/a" if ev.cv_r2 is None else f"{ev.cv_r2:.2f}"
    gain = "n/a" if ev.gain_over_random is None else f"{ev.gain_over_random:+.3f}"
    return (f"{head} Held-out predicted gain of {ev.strategy} over random: {gain} ({interval}, "
            f"{ev.n_bootstrap} bootstrap resamples); rests on {ev.n_pilot} pilot comparisons "
            f"({ev.n_pilot_scored} non-tie human labels), {ev.n_simulations} simulated mixes, "
            f"R² cross-validated on the pilot's halves {r2}.")
