"""Agreement between annotators: percent agreement, Cohen's kappa, Krippendorff's alpha.

Labels are whatever a rater gave a comparison: ``"A"`` / ``"B"`` / ``"tie"`` for nominal
statistics, or a signed strength (``-2`` = A much better ... ``+2`` = B much better) for the
ordinal alpha. :func:`agreement_report` takes raw label records and splits every statistic into
human-human, human-LM and LM-LM pairs, plus each annotator's agreement with everyone else, so a
project can see where an LM judge can be trusted.

N-way rankings enter as the pairwise judgements they imply (:func:`ranking_pair_records`).

Missing data is normal: a comparison labelled by one rater only is simply not pairable.
Statistics that are undefined (no pairable data, or no variation at all) are ``None``.

>>> percent_agreement({"c1": ["A", "A"], "c2": ["A", "B"]})
0.5
>>> round(cohen_kappa(["A", "A", "B", "B"], ["A", "B", "B", "B"]), 3)
0.5
>>> round(krippendorff_alpha({"c1": ["A", "A"], "c2": ["B", "B"], "c3": ["A", "B"]}), 3)
0.444
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from rlcore.errors import UserError, validation_message

Value = str | int | float
RaterKind = Literal["human", "lm"]
Level = Literal["nominal", "ordinal", "interval"]
PAIR_KINDS = ("human-human", "human-lm", "lm-lm")


class LabelRecord(BaseModel):
    """One rater's label on one comparison, as the annotation store or an LM judge wrote it."""

    comparison_id: str = Field(description="Id of the comparison that was labelled.")
    rater_id: str = Field(description="Id of the annotator account or of the LM judge (model + prompt version).")
    rater_kind: RaterKind = Field(description="'human' for a person, 'lm' for a language-model judge.")
    value: Value = Field(
        description="The label: 'A' / 'B' / 'tie' for nominal statistics, or a signed strength "
        "(negative = A better, 0 = tie, positive = B better) for ordinal alpha."
    )


class AgreementStats(BaseModel):
    """Agreement statistics over one set of rater pairs (all pairs, or one pair kind)."""

    percent_agreement: float | None = Field(
        description="Share of pairable label pairs (two raters, same comparison) that are equal."
    )
    cohen_kappa: float | None = Field(
        description="Mean Cohen's kappa over rater pairs that share at least `min_shared` comparisons "
        "(Light's kappa); None when no such pair exists or kappa is undefined for all of them."
    )
    krippendorff_alpha: float | None = Field(
        description="Krippendorff's alpha over the pairable values; None when it is undefined."
    )
    n_comparisons: int = Field(description="Comparisons that contributed at least one label pair.")
    n_pairs: int = Field(description="Unordered label pairs compared (two raters on one comparison).")
    n_rater_pairs: int = Field(description="Rater pairs whose Cohen's kappa went into the mean.")


class AnnotatorAgreement(BaseModel):
    """How one annotator agrees with all the others on the comparisons they share."""

    rater_id: str = Field(description="The annotator or LM judge.")
    rater_kind: RaterKind = Field(description="'human' or 'lm'.")
    n_labels: int = Field(description="Labels this rater gave.")
    stats: AgreementStats = Field(description="Agreement over pairs that involve this rater.")


class AgreementReport(BaseModel):
    """Everything the agreement views show for one project (or one slice of it)."""

    level: Level = Field(description="Metric used for alpha: nominal, ordinal or interval.")
    overall: AgreementStats = Field(description="All pairs of raters, whatever their kind.")
    by_pair_kind: dict[str, AgreementStats] = Field(
        description="Keys 'human-human', 'human-lm', 'lm-lm': the same statistics over pairs of that kind."
    )
    per_annotator: list[AnnotatorAgreement] = Field(description="One entry per rater, sorted by rater id.")


# --------------------------------------------------------------------------------------------
# pure statistics
# --------------------------------------------------------------------------------------------


def percent_agreement(units: Mapping[Hashable, Sequence[Value]]) -> float | None:
    """Share of agreeing pairs among all pairs of values given to the same unit.

    ``units`` maps a comparison to the labels it received (missing raters are simply absent).
    Units with fewer than two labels do not count.

    >>> round(percent_agreement({"c1": ["A", "A", "B"], "c2": ["tie"]}), 3)  # pairs AA, AB, AB
    0.333
    >>> percent_agreement({"c1": ["A"]}) is None
    True
    """
    agree = total = 0
    for values in units.values():
        for x, y in combinations(values, 2):
            total += 1
            agree += x == y
    return agree / total if total else None


def cohen_kappa(labels_a: Sequence[Value | None], labels_b: Sequence[Value | None]) -> float | None:
    """Cohen's kappa between two raters; positions where either is ``None`` are skipped.

    kappa = (p_o - p_e) / (1 - p_e), p_e from each rater's own label frequencies.
    Returns None when fewer than one pair remains or when p_e == 1 (both raters constant).

    >>> cohen_kappa(["A", "B", "tie", None], ["A", "B", "tie", "A"])
    1.0
    >>> cohen_kappa(["A", "A"], ["A", "A"]) is None
    True
    """
    if len(labels_a) != len(labels_b):
        raise UserError(f"cohen_kappa: the two label lists differ in length ({len(labels_a)} vs {len(labels_b)})")
    return cohen_kappa_from_table(Counter((x, y) for x, y in zip(labels_a, labels_b) if x is not None and y is not None))


def cohen_kappa_from_table(table: Mapping[tuple[Value, Value], int]) -> float | None:
    """Cohen's kappa from the two raters' pair counts ``{(label_a, label_b): n}`` (their contingency table).

    The table is all kappa needs, so a report can count pairs as labels stream by and never hold them.

    >>> round(cohen_kappa_from_table({("A", "A"): 1, ("A", "B"): 1, ("B", "B"): 2}), 3)
    0.5
    """
    n = sum(table.values())
    if not n:
        return None
    p_o = sum(w for (x, y), w in table.items() if x == y) / n
    freq_a: Counter = Counter()
    freq_b: Counter = Counter()
    for (x, y), w in table.items():
        freq_a[x] += w
        freq_b[y] += w
    p_e = sum(freq_a[c] * freq_b[c] for c in freq_a) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1.0 - p_e)


def coincidence_matrix(
    units: Mapping[Hashable, Sequence[Value]],
    pair_filter: Callable[[Hashable, int, int], bool] | None = None,
) -> dict[tuple[Value, Value], float]:
    """Krippendorff's coincidence matrix ``o[c, k]`` over the pairable values of every unit.

    Without a filter every ordered pair of values in a unit with m values counts 1/(m-1), so
    each pairable value contributes a total weight of 1. With ``pair_filter(unit, i, j)`` only the
    selected ordered pairs count (used for human-LM or one-rater splits); they are weighted so the
    unit still contributes one per value that takes part in a selected pair.

    >>> sorted(coincidence_matrix({"u": ["A", "A", "B"]}).items())
    [(('A', 'A'), 1.0), (('A', 'B'), 1.0), (('B', 'A'), 1.0)]
    """
    matrix: dict[tuple[Value, Value], float] = defaultdict(float)
    for unit, values in units.items():
        m = len(values)
        _add_unit_coincidences(matrix, values, [
            (i, j)
            for i in range(m)
            for j in range(m)
            if i != j and (pair_filter is None or pair_filter(unit, i, j))
        ])
    return dict(matrix)


def _add_unit_coincidences(matrix: dict, values: Sequence[Value], pairs: Sequence[tuple[int, int]]) -> None:
    """One unit's share of the coincidence matrix: its selected ordered pairs (i, j), weighted as above."""
    if not pairs:
        return
    weight = len({i for i, _ in pairs}) / len(pairs)
    for i, j in pairs:
        matrix[(values[i], values[j])] += weight


def _ordered_categories(categories: Iterable[Value], order: Sequence[Value] | None) -> list[Value]:
    categories = set(categories)
    if order is None:
        try:
            return sorted(categories)  # numbers sort naturally
        except TypeError as exc:
            raise UserError("ordinal alpha: labels of mixed types need an explicit `order`") from exc
    unknown = categories - set(order)
    if unknown:
        raise UserError(f"ordinal alpha: labels {sorted(map(str, unknown))} are missing from `order`")
    return list(order)


def _delta_squared(level: Level, marginals: Mapping[Value, float], order: Sequence[Value] | None):
    if level == "nominal":
        return lambda c, k: 0.0 if c == k else 1.0
    if level == "interval":
        def interval(c, k):
            try:
                return (float(c) - float(k)) ** 2
            except (TypeError, ValueError) as exc:
                raise UserError(f"interval alpha needs numeric labels, got {c!r}") from exc
        return interval
    if level == "ordinal":
        cats = _ordered_categories(marginals, order)
        rank = {c: r for r, c in enumerate(cats)}

        def ordinal(c, k):
            lo, hi = sorted((rank[c], rank[k]))
            between = sum(marginals.get(cats[g], 0.0) for g in range(lo, hi + 1))
            return (between - (marginals.get(c, 0.0) + marginals.get(k, 0.0)) / 2.0) ** 2
        return ordinal
    raise UserError(f"unknown alpha level {level!r}: use nominal, ordinal or interval")


def alpha_from_coincidences(
    matrix: Mapping[tuple[Value, Value], float],
    level: Level = "nominal",
    order: Sequence[Value] | None = None,
) -> float | None:
    """alpha = 1 - D_o / D_e from a coincidence matrix (Krippendorff 2011, section C).

    >>> alpha_from_coincidences({("A", "A"): 2.0, ("B", "B"): 2.0})
    1.0
    """
    marginals: dict[Value, float] = defaultdict(float)
    for (c, _k), w in matrix.items():
        marginals[c] += w
    n = sum(marginals.values())
    if n <= 1:
        return None
    delta2 = _delta_squared(level, marginals, order)
    observed = sum(w * delta2(c, k) for (c, k), w in matrix.items())
    cats = list(marginals)
    expected = sum(marginals[c] * marginals[k] * delta2(c, k) for c in cats for k in cats)
    if expected == 0:
        return None
    return 1.0 - (n - 1) * observed / expected


def krippendorff_alpha(
    units: Mapping[Hashable, Sequence[Value]],
    level: Level = "nominal",
    order: Sequence[Value] | None = None,
) -> float | None:
    """Krippendorff's alpha for any number of raters with missing data.

    ``units`` maps each unit to the values it received; ``order`` fixes the ordering of
    ordinal categories when they do not sort naturally (e.g. ``["A>>B", "A>B", "tie", ...]``).

    >>> round(krippendorff_alpha({"u1": [1, 1], "u2": [2, 2], "u3": [1, 2]}, level="ordinal"), 3)
    0.444
    """
    return alpha_from_coincidences(coincidence_matrix(units), level=level, order=order)


def signed_strength(choice: str, strength: int = 1) -> int:
    """Turn an A / B / tie choice with a strength into one ordinal value (A negative, B positive).

    >>> [signed_strength("A", 2), signed_strength("tie", 3), signed_strength("B", 1)]
    [-2, 0, 1]
    """
    if choice == "A":
        return -abs(strength)
    if choice == "B":
        return abs(strength)
    if choice == "tie":
        return 0
    raise UserError(f"label choice {choice!r} is not one of 'A', 'B', 'tie'")


def ranking_pair_records(comparison_id: str, rater_id: str, rater_kind: RaterKind,
                         ranking: Sequence[Hashable]) -> list[LabelRecord]:
    """An N-way ranking (best first) as the pairwise judgements it implies, one record per pair.

    Each pair of responses becomes its own unit ``"<comparison>:<lower id>-<higher id>"`` with value
    ``"A"`` when the lower id is ranked above the higher one, else ``"B"``; so two rankings of one
    comparison agree on a unit exactly when they order that pair alike, and percent agreement over
    the units is 1 minus the normalised Kendall tau distance between the rankings.

    >>> [(r.comparison_id, r.value) for r in ranking_pair_records("c7", "ann", "human", [12, 10, 11])]
    [('c7:10-11', 'A'), ('c7:10-12', 'B'), ('c7:11-12', 'B')]
    """
    position = {item: i for i, item in enumerate(ranking)}
    return [LabelRecord(comparison_id=f"{comparison_id}:{low}-{high}", rater_id=rater_id, rater_kind=rater_kind,
                        value="A" if position[low] < position[high] else "B")
            for low, high in combinations(sorted(position), 2)]


# --------------------------------------------------------------------------------------------
# label records -> report
# --------------------------------------------------------------------------------------------


def _pair_kind(kind_a: str, kind_b: str) -> str:
    """
    >>> _pair_kind("lm", "human")
    'human-lm'
    """
    return "-".join(sorted((kind_a, kind_b)))


def _index(records: Iterable[LabelRecord]):
    """comparison -> [(rater, value)], rater -> kind; a rater's repeated label keeps the last one."""
    by_unit: dict[str, dict[str, Value]] = defaultdict(dict)
    kinds: dict[str, str] = {}
    for rec in records:
        _check_kind(kinds, rec)
        by_unit[rec.comparison_id][rec.rater_id] = rec.value
    return {u: list(r.items()) for u, r in by_unit.items()}, kinds


def _check_kind(kinds: dict[str, str], rec: LabelRecord) -> None:
    previous = kinds.setdefault(rec.rater_id, rec.rater_kind)
    if previous != rec.rater_kind:
        raise UserError(
            f"rater {rec.rater_id!r} is recorded both as {previous!r} and as {rec.rater_kind!r} "
            f"(comparison {rec.comparison_id!r}): fix rater_kind"
        )


class _View:
    """Running statistics over the rater pairs one predicate selects (all pairs, a pair kind, one rater).

    It keeps counts only, never labels: agreeing and total pairs, the units that gave a pair, each rater
    pair's contingency table (Cohen's kappa needs nothing else) and the coincidence matrix (alpha's), each
    unit added once when it is complete. Size: rater pairs x categories squared, whatever the label count.
    """

    __slots__ = ("pair_ok", "agree", "total", "used_units", "tables", "matrix")

    def __init__(self, pair_ok: Callable[[str, str], bool]):
        self.pair_ok = pair_ok
        self.agree = self.total = self.used_units = 0
        self.tables: dict[tuple[str, str], Counter] = {}
        self.matrix: dict[tuple[Value, Value], float] = defaultdict(float)

    def add_unit(self, unit: Sequence[tuple[str, Value]]) -> None:
        any_pair = False
        for (ra, va), (rb, vb) in combinations(unit, 2):
            if not self.pair_ok(ra, rb):
                continue
            any_pair = True
            self.total += 1
            self.agree += va == vb
            key, pair = ((ra, rb), (va, vb)) if ra < rb else ((rb, ra), (vb, va))
            self.tables.setdefault(key, Counter())[pair] += 1
        self.used_units += any_pair
        m = len(unit)
        _add_unit_coincidences(self.matrix, [v for _, v in unit], [
            (i, j) for i in range(m) for j in range(m) if i != j and self.pair_ok(unit[i][0], unit[j][0])])

    def stats(self, level: Level, order: Sequence[Value] | None, min_shared: int) -> AgreementStats:
        kappas = [k for table in self.tables.values() if sum(table.values()) >= min_shared
                  if (k := cohen_kappa_from_table(table)) is not None]
        return AgreementStats(
            percent_agreement=self.agree / self.total if self.total else None,
            cohen_kappa=sum(kappas) / len(kappas) if kappas else None,
            krippendorff_alpha=alpha_from_coincidences(self.matrix, level, order) if self.matrix else None,
            n_comparisons=self.used_units,
            n_pairs=self.total,
            n_rater_pairs=len(kappas),
        )


def _stats(
    units: Mapping[str, list[tuple[str, Value]]],
    pair_ok: Callable[[str, str], bool],
    level: Level,
    order: Sequence[Value] | None,
    min_shared: int,
) -> AgreementStats:
    view = _View(pair_ok)
    for unit in units.values():
        view.add_unit(unit)
    return view.stats(level, order, min_shared)


class AgreementAccumulator:
    """:func:`agreement_report` one label at a time, in memory that does not grow with the labels.

    Records must come grouped by comparison (all labels of one comparison one after another, e.g. a
    query ordered by comparison id): a comparison is complete when the next one starts, and is then
    added to every statistic and forgotten. A comparison that came back later would count as a second
    unit, so an unordered source must go through ``agreement_report(..., grouped=False)``.

    >>> acc = AgreementAccumulator()
    >>> for c, r, v in [("c1", "ann", "A"), ("c1", "bob", "A"), ("c2", "ann", "A"), ("c2", "bob", "B")]:
    ...     acc.add(LabelRecord(comparison_id=c, rater_id=r, rater_kind="human", value=v))
    >>> acc.report().overall.percent_agreement
    0.5
    """

    def __init__(self, level: Level = "nominal", order: Sequence[Value] | None = None, min_shared: int = 2):
        self.level, self.order, self.min_shared = level, order, min_shared
        self._kinds: dict[str, str] = {}
        self._n_labels: Counter = Counter()
        kinds = self._kinds
        self._overall = _View(lambda a, b: True)
        self._by_kind = {pk: _View(lambda a, b, pk=pk: _pair_kind(kinds[a], kinds[b]) == pk) for pk in PAIR_KINDS}
        self._per_rater: dict[str, _View] = {}
        self._unit_id: str | None = None
        self._unit: dict[str, Value] = {}  # the open comparison: rater -> value (a repeated label keeps the last)

    def add(self, rec: LabelRecord) -> None:
        if rec.comparison_id != self._unit_id:
            self._close_unit()
            self._unit_id = rec.comparison_id
        _check_kind(self._kinds, rec)
        self._unit[rec.rater_id] = rec.value

    def _close_unit(self) -> None:
        if not self._unit:
            return
        unit = list(self._unit.items())
        self._unit = {}
        self._overall.add_unit(unit)
        for view in self._by_kind.values():
            view.add_unit(unit)
        for rater, _ in unit:
            self._n_labels[rater] += 1
            view = self._per_rater.get(rater)
            if view is None:
                view = self._per_rater[rater] = _View(lambda a, b, me=rater: me in (a, b))
            view.add_unit(unit)

    def report(self) -> AgreementReport:
        self._close_unit()
        args = (self.level, self.order, self.min_shared)
        return AgreementReport(
            level=self.level,
            overall=self._overall.stats(*args),
            by_pair_kind={pk: view.stats(*args) for pk, view in self._by_kind.items()},
            per_annotator=[
                AnnotatorAgreement(rater_id=rater, rater_kind=self._kinds[rater], n_labels=self._n_labels[rater],
                                   stats=self._per_rater[rater].stats(*args))
                for rater in sorted(self._kinds)
            ],
        )


def _by_comparison(records: Iterable[LabelRecord]) -> Iterable[LabelRecord]:
    """The records regrouped by comparison, comparisons in order of first appearance (held in memory)."""
    by_unit: dict[str, list[LabelRecord]] = defaultdict(list)
    for rec in records:
        by_unit[rec.comparison_id].append(rec)
    for recs in by_unit.values():
        yield from recs


def agreement_report(
    records: Iterable[LabelRecord],
    level: Level = "nominal",
    order: Sequence[Value] | None = None,
    min_shared: int = 2,
    grouped: bool = False,
) -> AgreementReport:
    """All agreement statistics for a set of label records, split by pair kind and by annotator.

    Pairs are two different raters on the same comparison. ``min_shared`` is how many
    comparisons two raters must share before their Cohen's kappa enters the mean.
    ``grouped=True`` promises the records come grouped by comparison; they are then streamed through
    :class:`AgreementAccumulator` and never held (flat memory at a million labels). Otherwise they are
    regrouped in memory first.

    >>> recs = [LabelRecord(comparison_id=c, rater_id=r, rater_kind=k, value=v) for c, r, k, v in [
    ...     ("c1", "ann", "human", "A"), ("c1", "gpt", "lm", "A"),
    ...     ("c2", "ann", "human", "B"), ("c2", "gpt", "lm", "A")]]
    >>> report = agreement_report(recs)
    >>> report.by_pair_kind["human-lm"].percent_agreement, report.by_pair_kind["human-human"].n_pairs
    (0.5, 0)
    """
    acc = AgreementAccumulator(level=level, order=order, min_shared=min_shared)
    for rec in records if grouped else _by_comparison(records):
        acc.add(rec)
    return acc.report()


def human_lm_agreement_by_feature(
    records: Iterable[LabelRecord],
    comparison_features: Mapping[str, Iterable[str]],
    level: Level = "nominal",
    order: Sequence[Value] | None = None,
    min_shared: int = 2,
) -> dict[str, AgreementStats]:
    """Human-LM agreement restricted to the comparisons that carry each routing feature.

    ``comparison_features`` maps a comparison id to its active binned features (see
    ``rlcore.routing.features``), so users see in which slices the LM judge can be trusted.

    >>> recs = [LabelRecord(comparison_id=c, rater_id=r, rater_kind=k, value=v) for c, r, k, v in [
    ...     ("c1", "ann", "human", "A"), ("c1", "gpt", "lm", "A"),
    ...     ("c2", "ann", "human", "B"), ("c2", "gpt", "lm", "A")]]
    >>> by = human_lm_agreement_by_feature(recs, {"c1": ["category=chat"], "c2": ["category=math"]})
    >>> by["category=chat"].percent_agreement, by["category=math"].percent_agreement
    (1.0, 0.0)
    """
    records = list(records)
    units, kinds = _index(records)
    members: dict[str, set[str]] = defaultdict(set)
    for cid, feats in comparison_features.items():
        for feat in feats:
            members[feat].add(cid)
    cross = lambda a, b: _pair_kind(kinds[a], kinds[b]) == "human-lm"  # noqa: E731
    return {
        feat: _stats({u: units[u] for u in sorted(cids) if u in units}, cross, level, order, min_shared)
        for feat, cids in sorted(members.items())
    }


def read_label_records(path: Path) -> list[LabelRecord]:
    """Read label records from a JSONL file; a bad line raises UserError naming file and line."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read labels ({exc.strerror})") from exc
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(LabelRecord.model_validate_json(line))
        except ValidationError as exc:
            raise UserError(validation_message(f"{path}:{lineno}", exc)) from exc
    return records


def _run_cli(args: argparse.Namespace) -> int:
    records = read_label_records(Path(args.labels))
    order = args.order.split(",") if args.order else None
    if order is not None and args.level == "ordinal":
        order = [int(o) if o.lstrip("-").isdigit() else o for o in order]
    report = agreement_report(records, level=args.level, order=order, min_shared=args.min_shared)
    sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "agreement", help="agreement statistics (kappa, alpha, %% agreement) split human/LM"  # argparse %-formats help
    )
    parser.add_argument("labels", help="JSONL of label records: comparison_id, rater_id, rater_kind, value")
    parser.add_argument("--level", choices=["nominal", "ordinal", "interval"], default="nominal")
    parser.add_argument("--order", default=None, help="comma-separated category order for ordinal alpha")
    parser.add_argument("--min-shared", type=int, default=2, help="shared comparisons before a pair's kappa counts")
    parser.set_defaults(handler=_run_cli)
