"""Reads for rubrics and reward specs: lists, versions, the live preview and diffs."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Max, QuerySet

from webapp.datasets.models import Dataset, Response
from webapp.projects.models import Project
from webapp.readers import readers
from webapp.rubrics.models import RewardSpec, RewardSpecVersion, Rubric, RubricVersion

PREVIEW_LIMIT = 20
JUDGED_PREVIEW_LIMIT = 8  # each response costs one judge call per rule-less criterion, made during the request


def annotation_rubric_for(project: Project) -> RubricVersion | None:
    """The latest version of the project's rubric marked for annotation, or None."""
    return (
        RubricVersion.objects.select_related("rubric")
        .filter(rubric__project=project, rubric__use_for_annotation=True)
        .order_by("-number")
        .first()
    )


def rubric_list(*, project: Project) -> QuerySet[Rubric]:
    return Rubric.objects.filter(project=project).annotate(latest=Max("versions__number")).order_by("name")


def reward_spec_list(*, project: Project) -> QuerySet[RewardSpec]:
    return RewardSpec.objects.filter(project=project).annotate(latest=Max("versions__number")).order_by("name")


def rubric_latest(*, rubric: Rubric) -> RubricVersion | None:
    return rubric.versions.order_by("-number").first()


def spec_latest(*, spec: RewardSpec) -> RewardSpecVersion | None:
    return spec.versions.order_by("-number").first()


def spec_for_editing(*, version: RewardSpecVersion) -> dict[str, Any]:
    """A saved spec as its author writes it: each inlined rubric that is a saved rubric version goes back to
    ``rubric_path: rubric://<name>@<n>``, and unset (null) fields are left out."""
    saved = {(v.rubric.name, v.number): v.definition for v in version.rubric_versions.select_related("rubric")}
    components = []
    for component in version.definition.get("components", []):
        component = {k: v for k, v in component.items() if v is not None}
        rubric = component.get("rubric")
        ref = next((key for key, definition in saved.items() if definition == rubric), None) if rubric else None
        if ref is not None:
            component.pop("rubric")
            component["rubric_path"] = f"rubric://{ref[0]}@{ref[1]}"
        components.append(component)
    out = {k: v for k, v in version.definition.items() if v is not None and k != "components"}
    return {**out, "components": components}


# ---------------------------------------------------------------- the project's data


def project_columns(*, project: Project) -> list[str] | None:
    """Columns a spec may read: 'prompt' plus every metadata column of the project's datasets.

    None (nothing to check against) while the project has no dataset.
    """
    column_lists = list(Dataset.objects.filter(project=project).exclude(status="failed")
                        .values_list("metadata_columns", flat=True))
    if not column_lists:
        return None
    columns = {"prompt"}
    for cols in column_lists:
        columns.update(str(c) for c in (cols or []))
    return sorted(columns)


def sample_responses(*, project: Project, limit: int = PREVIEW_LIMIT) -> list[dict[str, Any]]:
    """A fixed sample of the project's responses for previews: the first ``limit`` by import order, as rows
    ``{"id", "prompt", "completion", <metadata columns>}`` (the same sample every time, so ranks compare)."""
    rows = []
    queryset = (Response.objects.filter(prompt__dataset__project=project, prompt__dataset__status="ready")
                .select_related("prompt").order_by("prompt__dataset_id", "prompt__source_line", "id")[:limit])
    for r in queryset:
        row = {**(r.prompt.metadata or {}), **(r.metadata or {})}
        row.update(id=r.pk, prompt=r.prompt.text, completion=r.text)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- preview


def preview_budget_seconds() -> float:
    return float(getattr(settings, "RUBRIC_PREVIEW_BUDGET_SECONDS", 2.0))


def _within_budget(rows: list[dict[str, Any]], score_one, *, cut: bool = True) -> tuple[list[Any], dict[str, Any]]:
    """``score_one(row)`` for each row until the preview's time budget is spent; (results, budget summary).

    The budget bounds the request, not only the loop: a check that can run long (math-verify, in a helper
    process) stops at the deadline too. ``cut=False`` (a judged preview, bounded by its judge's timeout and
    row cap) scores every row, with only those checks bounded.
    """
    from rlcore.rules import BudgetExceeded, evaluation_deadline

    seconds = preview_budget_seconds()
    out: list[Any] = []
    with evaluation_deadline(seconds if cut else 3600.0) as deadline:
        for row in rows:
            if cut and time.monotonic() >= deadline:
                break
            try:
                out.append(score_one(row))
            except BudgetExceeded:
                break
    n, total = len(out), len(rows)
    message = None
    if n < total:
        message = (f"Stopped after {n} of {total} responses: the preview's time budget of {seconds:g} s "
                   f"(RUBRIC_PREVIEW_BUDGET_SECONDS) ran out; the other {total - n} were not scored.")
    return out, {"scored": n, "of": total, "budget_seconds": seconds, "stopped": n < total, "message": message}


def rubric_preview(*, project: Project, contract, baseline: RubricVersion | None = None, judge_config=None,
                   rows: list[dict[str, Any]] | None = None, first: list[dict[str, Any]] = (),
                   limit: int = PREVIEW_LIMIT) -> dict[str, Any]:
    """The rubric editor's live preview, for its page and the API alike: a (valid) rlcore Rubric scored on
    ``rows`` (None: the project's sample of ``limit``), ``first`` put before them, each row's rank compared
    with its rank under ``baseline`` (a saved version, normally the last one).

    ``judge_config``: its judge grades the criteria without a rule now, on at most ``JUDGED_PREVIEW_LIMIT``
    rows; a judge that cannot preview, or given rows beyond that, is a ValidationError naming the field.
    """
    judge = None
    if judge_config is not None:
        judge = readers.preview_judge(config=judge_config)
        limit = min(limit, JUDGED_PREVIEW_LIMIT)
        if rows is not None and len(rows) > limit:
            raise ValidationError({"rows": f"{len(rows)} rows; a preview graded by a judge takes at most "
                                           f"{limit} (each costs a judge call per criterion without a rule)"})
    from rlcore.rubric import Rubric as RubricContract

    rows = [*first, *(sample_responses(project=project, limit=limit) if rows is None else rows)]
    result = _scored_preview(contract=contract, rows=rows, judge=judge,
                             baseline=RubricContract.model_validate(baseline.definition) if baseline else None)
    result["baseline_version"] = baseline.number if result["has_baseline"] else None
    return result


def _scored_preview(*, contract, rows: list[dict[str, Any]], baseline=None, judge=None) -> dict[str, Any]:
    """Score ``rows`` on a (valid) rlcore Rubric: total, per-criterion breakdown, and each row's rank now versus
    under ``baseline`` (another Rubric contract).

    With ``judge``, criteria without a rule are graded by it too; the baseline is then left out (its rank
    would lack the judged criteria, so a rank change would mislead). Scoring stops when the time budget is
    spent: ``budget`` says how many rows were scored of how many, and ranks are among the scored rows.
    """
    from rlcore.rubric import CompiledRubric, rank_changes

    if judge is not None:
        baseline = None
    current = CompiledRubric(contract, checked=True)  # parse_rubric checked it
    before = CompiledRubric(baseline) if baseline is not None else None

    def score_one(row):
        text, prompt = str(row.get("completion", "")), str(row.get("prompt", ""))
        score = current.score([text], prompts=[prompt], rows=[row], judge=judge)[0]
        base = before.score([text], prompts=[prompt], rows=[row])[0].total if before is not None else None
        return score, base

    scored, budget = _within_budget(rows, score_one, cut=judge is None)
    rows = rows[:len(scored)]
    texts = [str(r.get("completion", "")) for r in rows]
    prompts = [str(r.get("prompt", "")) for r in rows]
    scores = [score for score, _ in scored]
    base_totals = [base for _, base in scored] if baseline is not None else None
    changes = rank_changes([s.total for s in scores], base_totals)
    items = []
    for i, (row, score, moved) in enumerate(zip(rows, scores, changes)):
        items.append({
            "id": row.get("id", i), "prompt": prompts[i], "completion": texts[i],
            "total": score.total, "rank": moved.rank,
            "baseline_total": base_totals[i] if base_totals is not None else None,
            "baseline_rank": moved.baseline_rank, "rank_change": moved.change,
            "vetoed_by": score.vetoed_by,
            "criteria": [c.model_dump() for c in score.criteria],
        })
    judge_errors = sorted({c.error for s in scores for c in s.criteria if c.source == "judge" and c.error})
    return {"criteria": [c.name for c in contract.criteria], "items": items,
            "changed_rank": sum(1 for it in items if it["rank_change"]), "has_baseline": baseline is not None,
            "judged_criteria": [c.name for c in contract.criteria if c.rule is None],
            "judged_by": getattr(judge, "name", None), "judge_errors": judge_errors if judge is not None else [],
            "budget": budget}


def _stored_model_scores(project, component, rows: list[dict[str, Any]]) -> tuple[list[float] | None, str]:
    """A registered reward model's scores of the previewed responses, as a worker stored them (the web
    process never loads a model), or None with the reason they cannot be shown."""
    ids = [row.get("id") for row in rows]
    found = (readers.registry_model_scores(project=project, path=component.path,
                                           response_ids=[i for i in ids if i is not None])
             if project is not None else None)
    if found is None:
        return None, "not a reward model of this project's registry: only a worker can score with it"
    if any(i is None for i in ids):
        return None, "rows given without response ids have no stored scores"
    name, stored = found
    missing = sum(1 for i in ids if i not in stored)
    if missing:
        return None, (f"{missing} of {len(ids)} previewed responses are not scored by {name} yet: run "
                      "'Score responses with the registry' on the Routing page (a worker job)")
    return [stored[i] for i in ids], ""


def spec_preview(*, contract, project: Project, rows: list[dict[str, Any]] | None = None,
                 limit: int = PREVIEW_LIMIT) -> dict[str, Any]:
    """Score ``rows`` (None: the project's sample of ``limit``) with a (valid) RewardSpec: total and every component.

    The web process loads no model: a reward-model component of the project's registry shows the scores a
    worker stored for these responses ('Score responses with the registry'); one without stored scores, and
    an LM judge component, are left out and listed in ``skipped`` with the reason in ``skipped_reasons``.
    Each row's components are computed until the time budget is spent (``budget``); the normalisation then
    runs over the scored rows only (a group cut short is normalised over what was scored)."""
    from rlcore.rewards.engine import RewardEngine, rows_to_batch
    from rlcore.rewards.spec import ProcessRewardModelComponent, RewardModelComponent, RubricJudgeComponent
    from rlcore.rules import BudgetExceeded, evaluation_deadline

    if rows is None:
        rows = sample_responses(project=project, limit=limit)
    reasons: dict[str, str] = {}
    stored: dict[str, list[float]] = {}
    for c in contract.components:
        if isinstance(c, RubricJudgeComponent):
            reasons[c.name] = "an LM judge grades it: use the rubric editor's judged preview"
        elif isinstance(c, ProcessRewardModelComponent):  # loading a model (or calling a judge) is a worker's job
            reasons[c.name] = ("a process reward model (or step judge) scores it, which only a worker runs: "
                               "see the GRPO run's rewards/<name>/mean")
        elif isinstance(c, RewardModelComponent):
            if contract.normalization == "par":
                reasons[c.name] = "PAR scores the references with the model itself, which only a worker runs"
                continue
            values, reason = _stored_model_scores(project, c, rows)
            if values is None:
                reasons[c.name] = reason
            else:
                stored[c.name] = values
    shown = [c for c in contract.components if c.name not in reasons]
    computed = [c for c in shown if c.name not in stored]
    items, budget = [], None
    if shown and rows and any(c.weight != 0 for c in shown):
        # parse_spec checked the whole spec; a part of it is not a spec to check again (its weights may be
        # all zero). Models load lazily: never here.
        engine = RewardEngine(contract.model_copy(update={"components": shown}), checked=True)
        rules = RewardEngine(contract.model_copy(update={"components": computed}), checked=True) if computed else None
        plain = [{k: v for k, v in r.items() if k != "id"} for r in rows]
        if rules is not None:
            per_row, budget = _within_budget(plain, lambda row: rules.component_values(rules.measure(rows_to_batch([row]))))
        else:  # every shown component is stored scores: nothing to compute, nothing to cut
            per_row = [[] for _ in plain]
            budget = {"scored": len(plain), "of": len(plain), "budget_seconds": preview_budget_seconds(),
                      "stopped": False, "message": None}
        n = len(per_row)
        by_name = {name: [v[k][0] for v in per_row] for k, name in enumerate(rules.names if rules else [])}
        by_name.update({name: values[:n] for name, values in stored.items()})
        values = [by_name[name] for name in engine.names]
        batch = engine.measure(rows_to_batch(plain[:n]))
        try:
            with evaluation_deadline(max(0.1, preview_budget_seconds())):
                totals = engine.combine(batch, values)[1] if n else []
        except BudgetExceeded:
            totals = [None] * n
            budget = budget or {"message": ""}
            budget["message"] = ((budget["message"] or "") + " The normalisation ran out of time: "
                                 "totals are not shown.").strip()
        for i, row in enumerate(rows[:n]):
            items.append({"id": row.get("id"), "prompt": row.get("prompt", ""), "completion": row.get("completion", ""),
                          "total": totals[i], "components": {name: values[k][i] for k, name in enumerate(engine.names)}})
    return {"components": [c.name for c in shown], "stored": sorted(stored), "skipped": list(reasons),
            "skipped_reasons": reasons, "items": items, "budget": budget}


def rubric_contract(*, version: RubricVersion):
    """A saved rubric version as an rlcore ``Rubric`` (for annotation pages, judges and jobs)."""
    from rlcore.rubric import Rubric as RubricContract

    return RubricContract.model_validate(version.definition)


def reward_spec_contract(*, version: RewardSpecVersion):
    """A saved reward spec version as an rlcore ``RewardSpec``, rubrics inlined (what a GRPO job's spec carries)."""
    from rlcore.rewards import RewardSpec as SpecContract

    return SpecContract.model_validate(version.definition)


def reward_server_url(*, job) -> str | None:
    """Where a serve_reward job's server listens: the address its child reported (None until it has)."""
    artifact = job.artifacts.filter(type="reward_server").order_by("-pk").first()
    return artifact.path if artifact else None
