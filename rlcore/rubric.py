"""Rubrics: named, weighted criteria, each checked by a rule or graded by a judge, aggregated into [0, 1].

Every criterion's score is first put on [0, 1] (rules give 0 or 1; a judge's grade is mapped from the
criterion's scale). The total is the weighted mean of the criteria that apply. Two ideas from
"Reinforcement Learning with Rubric Anchors" are available:

- **veto**: a failed *critical* criterion (normalised score below its ``pass_threshold``) caps the total at
  its ``veto_cap`` — a response that leaks a secret scores low however polite it is;
- **saturating aggregation**: each criterion's score passes through ``(1 - e^{-a s}) / (1 - e^{-a})`` before
  the mean, so moving a weak criterion up pays more than polishing a strong one (diminishing returns).
  Met (1) and failed (0) criteria are unchanged by the curve: it acts on graded, in-between scores.

>>> rubric = Rubric(name="answer", criteria=[
...     Criterion(name="polite", weight=1, rule={"kind": "contains", "texts": ["please", "thank"]}),
...     Criterion(name="short", weight=3, rule={"kind": "length", "max": 40}),
...     Criterion(name="no_urls", critical=True, veto_cap=0.1, rule={"kind": "format", "check": "no_urls"}),
... ])
>>> [s.total for s in score_rubric(rubric, ["Thank you!", "See www.example.com, thanks"])]
[1.0, 0.1]
>>> [(c.name, c.score) for c in score_rubric(rubric, ["Thank you!"])[0].criteria]
[('polite', 1.0), ('short', 1.0), ('no_urls', 1.0)]
>>> score_rubric(rubric, ["See www.example.com, thanks"])[0].vetoed_by
['no_urls']
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlcore.errors import UserError, validation_message
from rlcore.rules import Problem, Rule, RuleCheck, compile_rule, rule_problems, union_tags


class Criterion(BaseModel):
    """One thing a rubric asks of a response."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="short unique name, shown in breakdowns and metric names")
    description: str = Field("", description="what the criterion asks for; the judge reads this")
    weight: float = Field(1.0, ge=0, description="relative weight in the rubric's weighted mean")
    scale_min: float = Field(0.0, description="lowest score on the criterion's scale (a judge grades on it)")
    scale_max: float = Field(1.0, description="highest score on the criterion's scale")
    rule: Rule | None = Field(None, description="a rule check computed without a model; None: graded by a judge")
    critical: bool = Field(False, description="failing this criterion caps the rubric's total (a veto)")
    veto_cap: float = Field(0.0, ge=0, le=1, description="the cap on the total when a critical criterion fails")
    pass_threshold: float = Field(
        0.5, ge=0, le=1, description="normalised score below which the criterion counts as failed (for the veto)"
    )


class Rubric(BaseModel):
    """A named list of criteria and how to aggregate them."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="the rubric's name")
    description: str = Field("", description="what the rubric is for")
    criteria: list[Criterion] = Field(min_length=1, description="the criteria, in display order")
    aggregation: Literal["weighted_mean", "saturating"] = Field(
        "weighted_mean", description="'weighted_mean', or 'saturating' (diminishing returns per criterion)"
    )
    saturation: float = Field(3.0, gt=0, description="strength a of the saturating curve (1 - e^{-a s}) / (1 - e^{-a})")


class CriterionScore(BaseModel):
    """One criterion's result for one response."""

    name: str = Field(description="the criterion's name")
    score: float | None = Field(description="the score on the criterion's scale; None when it does not apply")
    normalized: float | None = Field(description="the score mapped to [0, 1]")
    passed: bool | None = Field(description="normalised score at or above the pass threshold")
    source: Literal["rule", "judge"] = Field(description="what produced the score")
    error: str | None = Field(None, description="why there is no score (judge reply unparseable, no reference...)")


class RubricScore(BaseModel):
    """A rubric's total for one response, with the per-criterion breakdown."""

    total: float | None = Field(description="aggregated score in [0, 1]; None when no criterion applies")
    criteria: list[CriterionScore] = Field(description="every criterion's result, in rubric order")
    vetoed_by: list[str] = Field(default_factory=list, description="critical criteria that failed and capped the total")


# ---------------------------------------------------------------- validation


def check_rubric(rubric: Rubric, where: str = "", field_prefix: str = "") -> list[Problem]:
    """Everything wrong with a rubric, each naming the criterion and field.

    >>> bad = Rubric(name="r", criteria=[Criterion(name="a", weight=0), Criterion(name="a", weight=0,
    ...              rule={"kind": "regex", "pattern": "(unclosed"})])
    >>> for p in check_rubric(bad): print(p)
    criterion 'a', field 'criteria[1].name': duplicate criterion name; names must be unique
    criterion 'a', field 'criteria[1].rule.pattern': RE2 cannot compile this pattern: missing ): (unclosed (look-arounds and back-references are not supported by the safe regex engine)
    rubric 'r', field 'criteria[*].weight': all weights are zero; give at least one criterion a positive weight
    """
    out: list[Problem] = []
    seen: set[str] = set()
    for i, criterion in enumerate(rubric.criteria):
        at = f"{where}criterion {criterion.name!r}"
        field = f"{field_prefix}criteria[{i}]."
        if criterion.name in seen:
            out.append(Problem(where=at, field=field + "name", message="duplicate criterion name; names must be unique"))
        seen.add(criterion.name)
        if not criterion.scale_max > criterion.scale_min:
            out.append(Problem(where=at, field=field + "scale_max",
                               message=f"scale_max ({criterion.scale_max}) must be above scale_min ({criterion.scale_min})"))
        if criterion.rule is not None:
            out.extend(rule_problems(criterion.rule, where=at, prefix=field + "rule."))
    if not any(c.weight > 0 for c in rubric.criteria):
        out.append(Problem(where=f"{where}rubric {rubric.name!r}", field=f"{field_prefix}criteria[*].weight",
                           message="all weights are zero; give at least one criterion a positive weight"))
    return out


def validate_rubric(rubric: Rubric, source: str | None = None) -> Rubric:
    """Return the rubric, or raise UserError listing every problem."""
    problems = check_rubric(rubric)
    if problems:
        raise UserError(_problem_text(problems, source))
    return rubric


def _problem_text(problems: Sequence[Problem], source: str | None) -> str:
    head = f"{source}: " if source else ""
    return head + "; ".join(str(p) for p in problems)


# ---------------------------------------------------------------- compiled scoring


class CompiledRubric:
    """A rubric ready to score fast: rules compiled once, weights and vetoes unpacked into tuples.

    ``score_rules`` is the hot path for rule criteria and does no pydantic work; criteria without a rule are
    skipped there (they need a judge: see :func:`score_rubric`). ``checked``: the rubric was validated where
    it entered (``check_rubric``, directly or as part of a reward spec's ``check_spec``), so not again here.
    """

    def __init__(self, rubric: Rubric, *, checked: bool = False) -> None:
        if not checked:
            validate_rubric(rubric)
        self.rubric = rubric
        self.criteria = rubric.criteria
        self.checks: list[RuleCheck | None] = [compile_rule(c.rule) if c.rule is not None else None
                                               for c in rubric.criteria]
        self.rule_indices = [i for i, check in enumerate(self.checks) if check is not None]
        self.judged_indices = [i for i, check in enumerate(self.checks) if check is None]
        alpha = rubric.saturation
        self._saturating = rubric.aggregation == "saturating"
        self._alpha, self._sat_norm = alpha, 1.0 - math.exp(-alpha)
        self._rule_plan = tuple(
            (self.checks[i], c.weight, c.critical, c.pass_threshold, c.veto_cap)
            for i, c in enumerate(rubric.criteria) if self.checks[i] is not None
        )

    def score_rules(self, text: str, row: Mapping[str, Any], n_tokens: int | None = None) -> float | None:
        """Aggregate the rule criteria only, for one response. None when no rule criterion applies."""
        total = weights = 0.0
        cap = 1.0
        saturating = self._saturating
        for check, weight, critical, threshold, veto_cap in self._rule_plan:
            value = check(text, row, n_tokens)
            if value is None:
                continue
            if critical and value < threshold and veto_cap < cap:
                cap = veto_cap
            if saturating:
                value = (1.0 - math.exp(-self._alpha * value)) / self._sat_norm
            total += weight * value
            weights += weight
        if weights == 0.0:
            return None if cap == 1.0 else cap
        return min(total / weights, cap)

    def aggregate(self, normalized: Sequence[float | None]) -> tuple[float | None, list[str]]:
        """Total and vetoes from every criterion's normalised score (None: does not apply)."""
        total = weights = 0.0
        cap, vetoed_by = 1.0, []
        for criterion, value in zip(self.criteria, normalized):
            if value is None:
                continue
            if criterion.critical and value < criterion.pass_threshold:
                vetoed_by.append(criterion.name)
                cap = min(cap, criterion.veto_cap)
            if self._saturating:
                value = (1.0 - math.exp(-self._alpha * value)) / self._sat_norm
            total += criterion.weight * value
            weights += criterion.weight
        if weights == 0.0:
            return (None if not vetoed_by else cap), vetoed_by
        return min(total / weights, cap), vetoed_by

    def score(self, responses: Sequence[str], *, prompts: Sequence[str] | None = None,
              rows: Sequence[Mapping[str, Any]] | None = None, n_tokens: Sequence[int | None] | None = None,
              judge=None, reference_column: str | None = "reference") -> list[RubricScore]:
        """Full per-criterion breakdown for each response (rules here, judged criteria through ``judge``)."""
        n = len(responses)
        rows = rows if rows is not None else [{} for _ in range(n)]
        prompts = prompts if prompts is not None else [str(r.get("prompt", "")) for r in rows]
        n_tokens = n_tokens if n_tokens is not None else [None] * n
        grades = self._grade(responses, prompts, rows, judge, reference_column)
        out = []
        for k in range(n):
            per: list[CriterionScore] = []
            for i, criterion in enumerate(self.criteria):
                check = self.checks[i]
                if check is not None:
                    value = check(responses[k], rows[k], n_tokens[k])
                    per.append(_criterion_score(criterion, value, "rule",
                                                None if value is not None else "does not apply to this row"))
                else:
                    value, error = grades.get((k, i), (None, "no judge given for a criterion without a rule"))
                    per.append(_criterion_score(criterion, value, "judge", error))
            total, vetoed_by = self.aggregate([s.normalized for s in per])
            out.append(RubricScore(total=total, criteria=per, vetoed_by=vetoed_by))
        return out

    def _grade(self, responses, prompts, rows, judge, reference_column) -> dict[tuple[int, int], tuple[float | None, str | None]]:
        if not self.judged_indices or judge is None:
            return {}
        from rlcore.judges.base import GradeRequest

        keys, requests = [], []
        for k, response in enumerate(responses):
            for i in self.judged_indices:
                c = self.criteria[i]
                reference = rows[k].get(reference_column) if reference_column else None
                requests.append(GradeRequest(request_id=f"{k}:{c.name}", prompt=prompts[k], response=response,
                                             criterion=c.name, description=c.description, scale_min=c.scale_min,
                                             scale_max=c.scale_max,
                                             reference=None if reference is None else str(reference)))
                keys.append((k, i))
        results = judge.grade(requests)
        grades = {}
        for key, result in zip(keys, results):
            c = self.criteria[key[1]]
            if result.verdict is None:
                grades[key] = (None, result.error or "the judge gave no score")
            else:
                grades[key] = ((result.verdict - c.scale_min) / (c.scale_max - c.scale_min), None)
        return grades


def _criterion_score(criterion: Criterion, normalized: float | None, source: str, error: str | None) -> CriterionScore:
    if normalized is None:
        return CriterionScore(name=criterion.name, score=None, normalized=None, passed=None, source=source, error=error)
    score = criterion.scale_min + normalized * (criterion.scale_max - criterion.scale_min)
    return CriterionScore(name=criterion.name, score=score, normalized=normalized,
                          passed=normalized >= criterion.pass_threshold, source=source)


def score_rubric(rubric: Rubric, responses: Sequence[str], *, prompts: Sequence[str] | None = None,
                 rows: Sequence[Mapping[str, Any]] | None = None, judge=None,
                 n_tokens: Sequence[int | None] | None = None) -> list[RubricScore]:
    """Score responses on a rubric with a per-criterion breakdown (the webapp's live preview).

    ``rows`` are the dataset rows (for reference columns; a ``reference`` column is shown to the judge);
    ``judge`` grades the criteria without a rule — without one, those criteria are reported with an error and
    left out of the total.
    """
    return CompiledRubric(rubric).score(responses, prompts=prompts, rows=rows, judge=judge, n_tokens=n_tokens)


class RankChange(NamedTuple):
    """One response's place under an edited rubric versus under its baseline (1 = best)."""

    rank: int | None
    baseline_rank: int | None
    change: int | None  # places moved up (negative: down); None when either rank is missing


def ranks(totals: Sequence[float | None]) -> list[int | None]:
    """1 = best; ties share the better rank; unscored responses have no rank.

    >>> ranks([0.5, 0.9, None, 0.5])
    [2, 1, None, 2]
    """
    first: dict[float, int] = {}
    for i, t in enumerate(sorted((t for t in totals if t is not None), reverse=True)):
        first.setdefault(t, i + 1)
    return [None if t is None else first[t] for t in totals]


def rank_changes(totals: Sequence[float | None], baseline: Sequence[float | None] | None = None) -> list[RankChange]:
    """How a rubric edit changes the ranking of the same responses: each one's rank under ``totals``, under
    ``baseline`` (the totals before the edit; None: no baseline), and how many places it moved up.

    >>> [tuple(r) for r in rank_changes([0.9, 0.2, 0.5, None], [0.1, 0.8, 0.5, 0.3])]
    [(1, 4, 3), (3, 1, -2), (2, 2, 0), (None, 3, None)]
    >>> rank_changes([0.4])[0]
    RankChange(rank=1, baseline_rank=None, change=None)
    """
    now = ranks(totals)
    before = ranks(baseline) if baseline is not None else [None] * len(now)
    return [RankChange(r, b, b - r if r is not None and b is not None else None) for r, b in zip(now, before)]


# ---------------------------------------------------------------- files

Contract = TypeVar("Contract", bound=BaseModel)


# A rubric or reward spec is a few kilobytes; a megabyte is far beyond any real one.
MAX_DOCUMENT_CHARS = 1_000_000


def _safe_yaml_loader():
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """PyYAML's SafeLoader without aliases: each ``*name`` re-expands its anchor, so a 430-byte "billion
        laughs" file became a 3 MB definition. Contracts are small enough to write out in full."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"aliases (*{event.anchor}) are not allowed; write the value out in full",
                    event.start_mark)
            return super().compose_node(parent, index)

    return NoAliasLoader


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` for documents people write, refusing aliases and documents over MAX_DOCUMENT_CHARS.

    Raises ``yaml.YAMLError`` with a ``problem_mark`` (the line) like any other YAML error.

    >>> import yaml
    >>> try:
    ...     load_yaml("a: &x [1]\\nb: *x")
    ... except yaml.YAMLError as exc:
    ...     print(exc.problem_mark.line + 1, exc.problem)
    2 aliases (*x) are not allowed; write the value out in full
    """
    import yaml

    if len(text) > MAX_DOCUMENT_CHARS:
        raise yaml.YAMLError(f"the document has {len(text):,} characters, more than the {MAX_DOCUMENT_CHARS:,} "
                             "allowed")
    return yaml.load(text, Loader=_safe_yaml_loader())  # noqa: S506 - a SafeLoader subclass


def read_document(path: str | Path) -> tuple[Any, str]:
    """Parse a YAML or JSON file (by suffix; YAML otherwise); return (data, text)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file ({exc.strerror})") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text), text
        return load_yaml(text), text
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to read") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None


def line_of(text: str, loc: Sequence[Any]) -> int | None:
    """1-based line where the value at ``loc`` starts in a YAML/JSON text, if it can be found."""
    import yaml

    try:
        node = yaml.compose(text, Loader=_safe_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(key):
                    node, line = v, k.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def load_contract(path: str | Path, model: type[Contract]) -> Contract:
    """Load a pydantic contract from YAML/JSON; a wrong field raises UserError naming file, line and field."""
    data, text = read_document(path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        def where(loc: Sequence[Any]) -> str:
            line = line_of(text, loc)
            return f"{path}, line {line}" if line else str(path)

        raise UserError(validation_message(where, exc, skip=union_tags(model))) from None


def save_contract(contract: BaseModel, path: str | Path) -> None:
    """Write a contract as YAML (.yaml/.yml) or JSON (anything else)."""
    import yaml

    path = Path(path)
    data = contract.model_dump(mode="json", exclude_defaults=False, by_alias=True)
    if path.suffix.lower() in (".yaml", ".yml"):
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    else:
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_rubric(path: str | Path) -> Rubric:
    """Load a rubric from YAML or JSON and validate it; errors name the file and the field."""
    return validate_rubric(load_contract(path, Rubric), source=str(path))


def save_rubric(rubric: Rubric, path: str | Path) -> None:
    """Save a rubric as YAML or JSON (by suffix)."""
    save_contract(rubric, path)
