r"""Auditing labels with a reward-model ensemble ("Secrets of RLHF in Large Language Models Part II:
Reward Modeling", Wang et al. 2024, section 2).

For labelled pair ``i`` and ensemble member ``j`` the *preference strength* is the member's reward
difference ``d_ij = r_j(x_i, y_chosen) - r_j(x_i, y_rejected)``; over the K members

    mu_i = (1/K) sum_j d_ij,        sigma_i = sqrt( (1/(K-1)) sum_j (d_ij - mu_i)^2 )   (sample std)

The paper sorts pairs by ``mu`` and reads the lowest-``mu`` group (``mu < 0``) as probably incorrect
labels, the ``mu`` near 0 ones as ambiguous, and uses ``mu`` as an adaptive margin in the reward-model
loss ``-log sigmoid(r(x, y_c) - r(x, y_r) - mu(x, y))``. Its exact cut-offs could not be confirmed
here, so the rule is stated and set by the caller:

- **probably wrong**: ``mu_i < -t`` and ``|mu_i| > z * sigma_i`` (the ensemble confidently prefers the
  rejected response);
- **ambiguous**: ``|mu_i| <= z * sigma_i`` (the members' spread covers zero: the ensemble cannot tell);
- ``percentile``: the pair's rank of ``mu`` in [0, 1] (0 = lowest), so the paper's "lowest 10 %"
  reading is one filter away;
- ``adaptive_margin = mu_i``.

Defaults: ``t = 0``, ``z = 1``. Tie labels have no direction to doubt and are left out (counted).

>>> a = audit_labels([[2.0, -3.0, 0.5], [3.0, -2.5, -0.5]], ["p1", "p2", "p3"])
>>> [(p.pair_id, p.mean, round(p.std, 4), p.flag) for p in a.pairs]
[('p1', 2.5, 0.7071, 'ok'), ('p2', -2.75, 0.3536, 'probably_wrong'), ('p3', 0.0, 0.7071, 'ambiguous')]
>>> a.n_probably_wrong, a.n_ambiguous, a.n_members
(1, 1, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from rlcore.analysis.inputs import LabelledPair, ScoreTable
from rlcore.errors import UserError

AuditFlag = Literal["probably_wrong", "ambiguous", "ok"]


class AuditedPair(BaseModel):
    pair_id: str
    mean: float = Field(description="mu: the members' mean reward difference, chosen minus rejected")
    std: float = Field(description="sigma: their sample standard deviation")
    percentile: float = Field(description="rank of mu among the audited pairs, 0 = lowest, 1 = highest")
    flag: AuditFlag
    adaptive_margin: float = Field(description="mu, the paper's adaptive margin for the reward-model loss")


class EnsembleAudit(BaseModel):
    """Each labelled pair's ensemble verdict, the rule that made it, and the counts each action touches."""

    rule: str
    n_members: int
    n_pairs: int = Field(description="decisive labelled pairs audited")
    n_ties_excluded: int = 0
    n_probably_wrong: int
    n_ambiguous: int
    n_negative_mean: int = Field(description="pairs whose ensemble mean prefers the rejected response")
    pairs: list[AuditedPair]


def audit_labels(member_margins: Sequence[Sequence[float]] | np.ndarray, pair_ids: Sequence[str], *,
                 z: float = 1.0, t: float = 0.0, member_names: Sequence[str] | None = None,
                 n_ties_excluded: int = 0) -> EnsembleAudit:
    """Audit pairs from ``member_margins[j][i]`` (member j's reward difference on pair i)."""
    d = np.asarray(member_margins, dtype=np.float64)
    names = list(member_names) if member_names is not None else [f"member {j}" for j in range(len(d))]
    if d.ndim != 2 or d.shape[0] < 2:
        only = f" ({names[0]!r})" if len(names) == 1 else ""
        raise UserError(f"an ensemble audit needs at least 2 members; got {d.shape[0] if d.ndim == 2 else 0}{only}: "
                        "one model's spread is unknown, so no label can be called confidently wrong")
    if d.shape[1] != len(pair_ids):
        raise UserError(f"every member must score all {len(pair_ids)} pairs; got {d.shape[1]} margins per member")
    if not np.isfinite(d).all():
        j, i = np.argwhere(~np.isfinite(d))[0]
        raise UserError(f"{names[j]}: margin of pair {pair_ids[i]!r} is not finite")
    if not (np.isfinite(z) and np.isfinite(t)) or z < 0 or t < 0:  # nan passes `< 0`
        raise UserError(f"z and t must be finite and non-negative (got z={z}, t={t})")
    mu = d.mean(axis=0)
    sigma = d.std(axis=0, ddof=1)
    wrong = (mu < -t) & (np.abs(mu) > z * sigma)
    ambiguous = np.abs(mu) <= z * sigma
    n = len(pair_ids)
    order = np.argsort(mu, kind="stable")
    percentile = np.empty(n)
    percentile[order] = np.arange(n) / max(n - 1, 1)
    pairs = [AuditedPair(pair_id=str(pid), mean=float(m), std=float(s), percentile=float(pc),
                         flag="probably_wrong" if w else ("ambiguous" if a else "ok"), adaptive_margin=float(m))
             for pid, m, s, pc, w, a in zip(pair_ids, mu, sigma, percentile, wrong, ambiguous)]
    rule = (f"probably wrong: mu < -{t:g} and |mu| > {z:g} * sigma; ambiguous: |mu| <= {z:g} * sigma; "
            "mu, sigma = mean and sample std of the members' reward differences (chosen - rejected)")
    return EnsembleAudit(rule=rule, n_members=d.shape[0], n_pairs=n, n_ties_excluded=n_ties_excluded,
                         n_probably_wrong=int(wrong.sum()), n_ambiguous=int(ambiguous.sum()),
                         n_negative_mean=int((mu < 0).sum()), pairs=pairs)


def audit_from_scores(members: Sequence[ScoreTable], labelled: Sequence[LabelledPair], *, z: float = 1.0,
                      t: float = 0.0) -> EnsembleAudit:
    """Margins of each member on each decisive labelled pair, then ``audit_labels``.

    A member that did not score a labelled response is an error naming the member and the pair.
    """
    if len(members) < 2:
        raise UserError(f"an ensemble audit needs at least 2 members; got {len(members)}"
                        + (f" ({members[0].name!r})" if members else ""))
    decisive = [p for p in labelled if not p.tie]
    if not decisive:
        raise UserError(f"no decisive labelled pairs to audit ({len(labelled)} ties)")
    margins = np.empty((len(members), len(decisive)))
    for j, member in enumerate(members):
        for i, pair in enumerate(decisive):
            try:
                margins[j, i] = (member.scores[(pair.prompt_id, pair.chosen_id)]
                                 - member.scores[(pair.prompt_id, pair.rejected_id)])
            except KeyError as exc:
                raise UserError(f"member {member.name!r} has no score for prompt {exc.args[0][0]!r}, response "
                                f"{exc.args[0][1]!r} (labelled pair {_pair_name(pair, i)}); score every labelled "
                                "response with every member") from None
    return audit_labels(margins, [_pair_name(p, i) for i, p in enumerate(decisive)], z=z, t=t,
                        member_names=[m.name for m in members], n_ties_excluded=len(labelled) - len(decisive))


def _pair_name(pair: LabelledPair, index: int) -> str:
    return pair.label_id or pair.comparison_id or f"#{index}"
