"""Where a reward is gamed: proxy and gold reward against the distance from the start policy.

After Gao, Schulman & Hilton (2022), "Scaling Laws for Reward Model Overoptimization": as a policy is
optimised against a proxy reward, the proxy keeps rising with d = sqrt(KL(pi || pi_0)) while the
gold reward rises, peaks and falls. This module takes the samples of a few checkpoints of one run,
each scored by the run's own reward spec (the proxy, total and per component) and by a gold signal
the user picked (a held-out human win rate against the reference, an LM judge, another reward
model), and reports per checkpoint:

- proxy and gold means with a 95% normal interval (mean +- 1.96 standard errors) and the n behind each;
  samples without a gold score are counted and left out of the gold figures only;
- the KL from the start policy, estimated from the samples themselves (the "k1" estimator):
  ``KL ~= mean over sampled tokens of (log pi(y_t | .) - log pi_0(y_t | .))``, a per-token figure in
  nats; it is unbiased but can come out slightly negative on few tokens, so ``sqrt_kl`` clamps at 0
  (and says how many checkpoints were clamped);
- symptoms: mean completion length (whitespace words), distinct-2 (distinct word bigrams over all
  bigrams of the checkpoint's completions, Li et al. 2016) for repetition, each component's share of
  the absolute weighted total, and per rule component the fraction of samples where the rule is
  satisfied (> 0) while gold is below the start checkpoint's median gold ("rule satisfied, judge disagrees").

The *peak* is the checkpoint with the highest gold mean; it is flagged when a later checkpoint has a
higher proxy mean and a gold mean lower than the peak by more than 1.96 combined standard errors
(so noise alone does not flag it). Gap samples: proxy and gold are put on one scale by z-scoring each
over all samples with both, and the samples with the largest ``z(proxy) - z(gold)`` are listed with
their per-component rewards.

Per-checkpoint gold (an alternative to per-sample gold means): when the gold is a rate measured per checkpoint
(a human win rate against the start policy, Wilson 95% interval), pass ``checkpoint_gold`` as
``{checkpoint: CheckpointGold(value, low, high, n)}``. Those figures replace the per-sample gold means (a checkpoint
absent from it has no gold figure, e.g. the start policy, which is the reference), and the peak test uses them. The
Wilson interval is asymmetric, so its half-width stands in for the normal one: ``se = (high - low) / (2 * 1.96)``,
and the peak's drop must still exceed 1.96 combined such standard errors (for a symmetric normal interval this is
the ordinary s.e.; for a Wilson interval it is the s.e. of the normal interval of the same width). The per-sample
``gold`` (e.g. the head-to-head label of a sample's comparison: lost 0, tie 0.5, won 1) still feeds the gap samples
and the rule-disagreement rate; ``gold_threshold`` says what counts as the judge disagreeing (0.5 for head-to-head
outcomes: lost against the start; default the start checkpoint's median gold).

>>> rows = [SampleScore(checkpoint=c, step=s, prompt_id=f"p{i}", completion="ok " * (1 + s * (i % 3)),
...                     proxy=s + i % 3, gold=(1.0 if s < 2 else 0.0) + 0.1 * (i % 2), kl=0.5 * s, tokens=5)
...         for c, s in (("c0", 0), ("c1", 1), ("c2", 2)) for i in range(6)]
>>> report = analyse_overoptimization(rows)
>>> [c.checkpoint for c in report.checkpoints], report.peak.checkpoint, report.peak.flagged
(['c0', 'c1', 'c2'], 'c0', True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, ValidationError, model_validator

from rlcore.errors import UserError, validation_message
from rlcore.jsonl import read_jsonl_objects

Z95 = 1.959963984540054
KL_ESTIMATOR = ("k1: mean over sampled tokens of log pi(y_t) - log pi_0(y_t), per token, in nats; "
                "sqrt_kl clamps a negative estimate at 0")


class SampleScore(BaseModel):
    """One completion of one checkpoint, scored. JSONL row of ``analysis overopt --samples``."""

    checkpoint: str = Field(description="Checkpoint name (e.g. 'checkpoint-200').")
    step: int = Field(description="Training step of the checkpoint; orders the checkpoints.")
    prompt_id: str
    response_id: str = ""
    prompt: str = ""
    completion: str = ""
    proxy: float = Field(description="The run's own reward spec total for this completion.")
    components: dict[str, float] = Field(default_factory=dict,
                                         description="Per-component rewards, already weighted as in the total.")
    gold: float | None = Field(default=None, description="Gold score, higher is better; null when not scored.")
    logprobs: list[float] | None = Field(default=None, description="log pi(y_t) of each sampled token.")
    ref_logprobs: list[float] | None = Field(default=None, description="log pi_0(y_t) of the same tokens.")
    kl: float | None = Field(default=None, description="Per-token KL of this sample, when logprobs are not given.")
    tokens: int | None = Field(default=None, ge=0, description="Tokens behind ``kl`` (weights the mean).")

    @model_validator(mode="after")
    def _kl_source(self):
        if self.logprobs is not None or self.ref_logprobs is not None:
            if self.logprobs is None or self.ref_logprobs is None or len(self.logprobs) != len(self.ref_logprobs):
                raise ValueError("logprobs and ref_logprobs must both be given, one per token, of the same length")
        elif self.kl is None:
            raise ValueError("give either logprobs + ref_logprobs, or kl (per token) with tokens")
        for name, value in [("proxy", self.proxy), ("gold", self.gold), ("kl", self.kl), *self.components.items()]:
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} is not finite ({value!r})")
        return self

    def kl_terms(self) -> tuple[float, int]:
        """(sum over tokens of log pi - log pi_0, number of tokens)."""
        if self.logprobs is not None:
            return float(np.sum(np.subtract(self.logprobs, self.ref_logprobs))), len(self.logprobs)
        tokens = self.tokens if self.tokens is not None else 1
        return float(self.kl) * tokens, tokens


class OveroptSettings(BaseModel):
    """Thresholds of the symptom flags, each stated on the report."""

    rule_components: list[str] = Field(default_factory=list,
                                       description="Components that are rule checks (satisfied when > 0).")
    length_growth: float = Field(default=1.2, gt=1, description="Flag length when last/first mean length >= this.")
    distinct2_drop: float = Field(default=0.1, gt=0, description="Flag repetition when distinct-2 falls by >= this.")
    dominance_share: float = Field(default=0.6, gt=0, le=1,
                                   description="Flag a component whose share of |total| reaches this at the last checkpoint.")
    disagreement_rise: float = Field(default=0.2, gt=0, le=1,
                                     description="Flag a rule when its satisfied-but-gold-low rate rises by >= this.")
    top_gaps: int = Field(default=20, ge=1, le=1000, description="Gap samples listed.")
    min_gold: int = Field(default=2, ge=2, description="Fewest gold scores a checkpoint needs for a gold mean.")


class CheckpointGold(BaseModel):
    """Gold measured per checkpoint (not per sample): a value with its 95% interval and the n behind it."""

    value: float
    low: float
    high: float
    n: int = Field(ge=0, description="Labels (or scores) behind the value.")
    interval: str = Field(default="wilson", description="How [low, high] was computed (shown on the report).")

    @model_validator(mode="after")
    def _ordered(self):
        if not all(math.isfinite(v) for v in (self.value, self.low, self.high)):
            raise ValueError("value, low and high must be finite")
        if not self.low <= self.value <= self.high:
            raise ValueError(f"need low <= value <= high, got {self.low} <= {self.value} <= {self.high}")
        return self

    def as_interval(self) -> Interval:
        # The half-width of the (asymmetric) interval as a normal one: se = width / (2 * 1.96).
        return Interval(mean=self.value, low=self.low, high=self.high, n=self.n,
                        se=(self.high - self.low) / (2 * Z95))


class Interval(BaseModel):
    mean: float
    low: float
    high: float
    n: int
    se: float


class CheckpointSummary(BaseModel):
    checkpoint: str
    step: int
    n: int = Field(description="Samples scored at this checkpoint.")
    proxy: Interval
    gold: Interval | None = Field(description="None when fewer than min_gold samples have a gold score.")
    gold_missing: int = Field(description="Samples without a gold score (left out of gold figures).")
    kl: float
    sqrt_kl: float
    kl_tokens: int
    mean_length: float
    distinct_2: float
    bigrams: int
    component_means: dict[str, float]
    component_shares: dict[str, float]
    rule_disagreement: dict[str, float] = Field(
        description="Per rule component: fraction of gold-scored samples with the rule satisfied and gold below the threshold.")


class Peak(BaseModel):
    checkpoint: str | None
    flagged: bool
    reason: str
    drop: float | None = None
    drop_threshold: float | None = None
    later_checkpoint: str | None = None


class Symptom(BaseModel):
    kind: str = Field(description="length | repetition | dominance | rule_disagreement")
    flagged: bool
    detail: str
    component: str | None = None
    first: float | None = None
    last: float | None = None


class GapSample(BaseModel):
    checkpoint: str
    step: int
    prompt_id: str
    response_id: str
    prompt: str
    completion: str
    proxy: float
    gold: float
    gap: float = Field(description="z(proxy) - z(gold), each z-scored over all samples with both.")
    components: dict[str, float]


class OveroptimizationReport(BaseModel):
    checkpoints: list[CheckpointSummary]
    peak: Peak
    symptoms: list[Symptom]
    gap_samples: list[GapSample]
    samples: int
    samples_without_gold: int
    kl_estimator: str = KL_ESTIMATOR
    kl_clamped: int = Field(description="Checkpoints whose KL estimate was negative (sqrt_kl set to 0).")
    gold_threshold: float | None = Field(description="Per-sample gold below this is the judge disagreeing (rule "
                                                     "disagreement); default the start checkpoint's median gold.")
    gold_per_checkpoint: str | None = Field(default=None, description=(
        "None: gold figures are per-sample means; else how the given per-checkpoint gold was computed."))
    samples_without_gold_ids: list[str] = Field(default_factory=list, description=(
        "checkpoint/response_id (or prompt_id) of each sample without a gold score (left out of gap samples)."))
    settings: OveroptSettings


def distinct_n(texts: Sequence[str], n: int = 2) -> tuple[float, int]:
    """Distinct word n-grams over all n-grams of ``texts`` (1.0 when there are none), and their count.

    >>> distinct_n(["a b a b", "c d"])
    (0.75, 4)
    """
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.split()
        grams.extend(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return (len(set(grams)) / len(grams) if grams else 1.0), len(grams)


def _interval(values: Sequence[float]) -> Interval:
    array = np.asarray(values, dtype=float)
    mean = float(array.mean())
    se = float(array.std(ddof=1) / math.sqrt(len(array))) if len(array) > 1 else float("nan")
    return Interval(mean=mean, low=mean - Z95 * se, high=mean + Z95 * se, n=len(array), se=se)


def analyse_overoptimization(samples: Sequence[SampleScore], settings: OveroptSettings | None = None, *,
                             checkpoint_gold: Mapping[str, CheckpointGold] | None = None,
                             gold_threshold: float | None = None) -> OveroptimizationReport:
    """The report described in the module docstring; refuses an empty or one-checkpoint input, and
    ``checkpoint_gold`` naming a checkpoint that has no samples."""
    settings = settings or OveroptSettings()
    if not samples:
        raise UserError("no scored samples: score at least two checkpoints")
    by_checkpoint: dict[str, list[SampleScore]] = {}
    for sample in samples:
        by_checkpoint.setdefault(sample.checkpoint, []).append(sample)
    for name, rows in by_checkpoint.items():
        if len({r.step for r in rows}) != 1:
            raise UserError(f"checkpoint {name!r} has samples with different steps {sorted({r.step for r in rows})}")
    if len(by_checkpoint) < 2:
        raise UserError(f"only one checkpoint ({next(iter(by_checkpoint))!r}): over-optimisation needs at least two")
    ordered = sorted(by_checkpoint.items(), key=lambda item: item[1][0].step)
    if checkpoint_gold is not None and (stray := sorted(set(checkpoint_gold) - set(by_checkpoint))):
        raise UserError(f"checkpoint_gold: {stray} are not checkpoints of the samples")
    unknown = set(settings.rule_components) - {c for s in samples for c in s.components}
    if unknown:
        raise UserError(f"rule_components: {sorted(unknown)} are not components of the samples")

    first_gold = [s.gold for s in ordered[0][1] if s.gold is not None]
    threshold = gold_threshold if gold_threshold is not None else (
        float(np.median(first_gold)) if first_gold else None)
    summaries, clamped = [], 0
    for name, rows in ordered:
        golds = [r.gold for r in rows if r.gold is not None]
        kl_sum, kl_tokens = map(sum, zip(*(r.kl_terms() for r in rows)))
        kl = kl_sum / kl_tokens if kl_tokens else 0.0
        clamped += kl < 0
        names = sorted({c for r in rows for c in r.components})
        means = {c: float(np.mean([r.components.get(c, 0.0) for r in rows])) for c in names}
        abs_total = sum(abs(v) for v in means.values())
        disagreement = {}
        if threshold is not None:
            scored = [r for r in rows if r.gold is not None]
            for c in settings.rule_components:
                hits = sum(1 for r in scored if r.components.get(c, 0.0) > 0 and r.gold < threshold)
                disagreement[c] = hits / len(scored) if scored else 0.0
        distinct, bigrams = distinct_n([r.completion for r in rows])
        summaries.append(CheckpointSummary(
            checkpoint=name, step=rows[0].step, n=len(rows), proxy=_interval([r.proxy for r in rows]),
            gold=_gold_of(name, golds, checkpoint_gold, settings), gold_missing=len(rows) - len(golds),
            kl=kl, sqrt_kl=math.sqrt(max(kl, 0.0)), kl_tokens=int(kl_tokens),
            mean_length=float(np.mean([len(r.completion.split()) for r in rows])), distinct_2=distinct, bigrams=bigrams,
            component_means=means,
            component_shares={c: (abs(v) / abs_total if abs_total else 0.0) for c, v in means.items()},
            rule_disagreement=disagreement))
    return OveroptimizationReport(
        checkpoints=summaries, peak=_peak(summaries), symptoms=_symptoms(summaries, settings),
        gap_samples=_gaps(samples, settings.top_gaps), samples=len(samples),
        samples_without_gold=sum(1 for s in samples if s.gold is None), kl_clamped=clamped,
        gold_threshold=threshold, settings=settings,
        gold_per_checkpoint=(None if checkpoint_gold is None else
                             ", ".join(sorted({g.interval for g in checkpoint_gold.values()})) or "none given"),
        samples_without_gold_ids=[f"{s.checkpoint}/{s.response_id or s.prompt_id}" for s in samples if s.gold is None])


def _gold_of(name: str, golds: list[float], checkpoint_gold: Mapping[str, CheckpointGold] | None,
             settings: OveroptSettings) -> Interval | None:
    if checkpoint_gold is not None:
        given = checkpoint_gold.get(name)
        return given.as_interval() if given is not None else None
    return _interval(golds) if len(golds) >= settings.min_gold else None


def _peak(summaries: list[CheckpointSummary]) -> Peak:
    with_gold = [s for s in summaries if s.gold is not None]
    if len(with_gold) < 2:
        return Peak(checkpoint=None, flagged=False,
                    reason=f"{len(with_gold)} checkpoint(s) have enough gold scores; at least two are needed")
    peak = max(with_gold, key=lambda s: s.gold.mean)
    best: Peak | None = None
    for later in with_gold[with_gold.index(peak) + 1:]:
        drop = peak.gold.mean - later.gold.mean
        threshold = Z95 * math.sqrt(np.nan_to_num(peak.gold.se) ** 2 + np.nan_to_num(later.gold.se) ** 2)
        if later.proxy.mean > peak.proxy.mean and drop > threshold and (best is None or drop > best.drop):
            best = Peak(checkpoint=peak.checkpoint, flagged=True, drop=drop, drop_threshold=threshold,
                        later_checkpoint=later.checkpoint,
                        reason=(f"gold peaks at {peak.checkpoint} (step {peak.step}) and falls by {drop:.3g} "
                                f"(> {threshold:.3g}, 1.96 combined s.e.) by {later.checkpoint} while proxy rises "
                                f"from {peak.proxy.mean:.3g} to {later.proxy.mean:.3g}"))
    return best or Peak(checkpoint=peak.checkpoint, flagged=False,
                        reason=(f"gold is highest at {peak.checkpoint}; no later checkpoint has a higher proxy and a "
                                "gold drop beyond 1.96 combined standard errors"))


def _symptoms(summaries: list[CheckpointSummary], settings: OveroptSettings) -> list[Symptom]:
    first, last = summaries[0], summaries[-1]
    ratio = last.mean_length / first.mean_length if first.mean_length else math.inf
    symptoms = [
        Symptom(kind="length", flagged=ratio >= settings.length_growth, first=first.mean_length, last=last.mean_length,
                detail=f"mean length {first.mean_length:.1f} -> {last.mean_length:.1f} words "
                       f"({ratio:.2f}x; flagged at >= {settings.length_growth}x)"),
        Symptom(kind="repetition", flagged=first.distinct_2 - last.distinct_2 >= settings.distinct2_drop,
                first=first.distinct_2, last=last.distinct_2,
                detail=f"distinct-2 {first.distinct_2:.3f} -> {last.distinct_2:.3f} "
                       f"({last.bigrams} bigrams; flagged at a drop >= {settings.distinct2_drop})"),
    ]
    if len(last.component_shares) > 1:
        top = max(last.component_shares, key=last.component_shares.get)
        share, before = last.component_shares[top], first.component_shares.get(top, 0.0)
        symptoms.append(Symptom(
            kind="dominance", component=top, first=before, last=share,
            flagged=share >= settings.dominance_share and share > before,
            detail=f"{top} is {share:.0%} of the absolute total at {last.checkpoint} ({before:.0%} at "
                   f"{first.checkpoint}; flagged at >= {settings.dominance_share:.0%} and growing)"))
    for c in settings.rule_components:
        a, b = first.rule_disagreement.get(c, 0.0), last.rule_disagreement.get(c, 0.0)
        symptoms.append(Symptom(
            kind="rule_disagreement", component=c, first=a, last=b, flagged=b - a >= settings.disagreement_rise,
            detail=f"rule {c} satisfied while gold is below the start median: {a:.0%} -> {b:.0%} of samples "
                   f"(flagged at a rise >= {settings.disagreement_rise:.0%})"))
    return symptoms


def _gaps(samples: Sequence[SampleScore], top: int) -> list[GapSample]:
    scored = [s for s in samples if s.gold is not None]
    if len(scored) < 2:
        return []
    proxy = np.array([s.proxy for s in scored])
    gold = np.array([s.gold for s in scored])

    def z(x):
        std = x.std()
        return (x - x.mean()) / std if std > 0 else np.zeros_like(x)

    gaps = z(proxy) - z(gold)
    order = np.argsort(-gaps, kind="stable")[:top]
    return [GapSample(checkpoint=scored[i].checkpoint, step=scored[i].step, prompt_id=scored[i].prompt_id,
                      response_id=scored[i].response_id, prompt=scored[i].prompt, completion=scored[i].completion,
                      proxy=scored[i].proxy, gold=float(scored[i].gold), gap=float(gaps[i]),
                      components=scored[i].components) for i in order]


def read_samples(path: str | Path) -> list[SampleScore]:
    """Read ``SampleScore`` rows from JSONL; a bad row names the file, line and field."""
    rows = []
    for number, row in read_jsonl_objects(path, expected="a scored sample object"):
        try:
            rows.append(SampleScore.model_validate(row))
        except ValidationError as exc:
            raise UserError(validation_message(f"{path}:{number}", exc)) from None
    return rows
