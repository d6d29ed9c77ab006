from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from rlcore.errors import UserError
from webapp.annotation import selectors, services
from webapp.annotation.rendering import render_markdown, render_turns
from webapp.annotation.services import LabelConflict
from webapp.datasets.forms import BuildComparisonsForm
from webapp.datasets.selectors import dataset_get, prompt_list
from webapp.forms_util import error_list, service_errors_as_messages, service_errors_on
from webapp.projects.permissions import Capability, project_for_user, role_allows


# ------------------------------------------------------------------ keys
# The workbench's one key map: static/js/workbench.js acts on it (the page carries it as the json_script
# "workbench-keys") and the page's help line lists it, so a key is changed here and nowhere else.


@dataclass(frozen=True)
class Key:
    key: str  # KeyboardEvent.key, lower-cased ("enter", "arrowdown")
    action: str  # one of workbench.js's ACTIONS
    arg: object = None  # what the action takes: [choice, strength], a grade, a response's position, a step offset
    help: str = ""  # the help line's words; a key without them (an alias) is not listed there
    shown: str = ""  # how the help line writes the key when not as typed


ITEM_KEYS = (Key("s", "skip", help="skip"), Key("u", "undo", help="undo"), Key("r", "note", help="rationale"),
             Key("c", "scores", help="scores"), Key("g", "guidelines", help="guidelines"), Key("?", "guidelines"))
PAIR_KEYS = (Key("1", "choose", ["A", 2], "A much better"), Key("2", "choose", ["A", 1], "A better"),
             Key("3", "choose", ["tie", 0], "tie"), Key("4", "choose", ["B", 1], "B better"),
             Key("5", "choose", ["B", 2], "B much better"),
             Key("a", "choose", ["A", 1]), Key("b", "choose", ["B", 1]), Key("t", "choose", ["tie", 0]))
RANKING_KEYS = (*(Key(str(n), "rank", n - 1) for n in range(1, 10)), Key("backspace", "restart_ranking"))
# In step mode g/n/b grade a step, so the guidelines are on "?" only.
STEP_KEYS = (Key("j", "move", 1, "next step"), Key("arrowdown", "move", 1, "next step", "↓"),
             Key("k", "move", -1, "previous"), Key("arrowup", "move", -1, "previous", "↑"),
             Key("f", "first_error", help="first wrong step"), Key("r", "note", help="note"),
             Key("enter", "submit_steps", help="submit", shown="Enter"), Key("s", "skip", help="skip"),
             Key("?", "guidelines", help="guidelines"))
GRADE_KEYS = {"ternary": (Key("g", "grade", 1, "good"), Key("n", "grade", 0, "neutral"), Key("b", "grade", -1, "bad")),
              "score5": tuple(Key(str(v), "grade", v, "grade (5-point scale)") for v in range(1, 6))}
# With the guidelines open, and while typing in a field.
DIALOG_KEYS = (Key("g", "guidelines"), Key("?", "guidelines"))
FIELD_KEYS = (Key("escape", "leave_field"),)


def _key_map(keys) -> dict[str, list]:
    return {k.key: [k.action, k.arg, k.help] for k in keys}


WORKBENCH_KEYS = {"pair": _key_map(ITEM_KEYS + PAIR_KEYS), "ranking": _key_map(ITEM_KEYS + RANKING_KEYS),
                  "item": _key_map(ITEM_KEYS), "dialog": _key_map(DIALOG_KEYS), "field": _key_map(FIELD_KEYS),
                  **{f"steps:{scale}": _key_map(STEP_KEYS + grades) for scale, grades in GRADE_KEYS.items()}}


def key_help(keys) -> list[tuple[list[str], str]]:
    """The help line: each key's words once, after the keys that have them.

    >>> key_help([Key("j", "move", 1, "next step"), Key("arrowdown", "move", 1, "next step", "↓"), Key("a", "x")])
    [(['j', '↓'], 'next step')]
    """
    lines: dict[str, list[str]] = {}
    for k in keys:
        if k.help:
            lines.setdefault(k.help, []).append(k.shown or k.key)
    return [(shown, words) for words, shown in lines.items()]


def _rubric_criteria(project) -> tuple[object | None, list[dict]]:
    from webapp.rubrics.selectors import annotation_rubric_for

    version = annotation_rubric_for(project)
    if version is None:
        return None, []
    return version, [{"name": c["name"], "description": c.get("description", ""), "min": c.get("scale_min", 0),
                      "max": c.get("scale_max", 1)} for c in version.definition.get("criteria", [])]


def _item_context(project, user, assignment, error: str = "", undone: bool = False) -> dict:
    context = {"project": project, "error": error, "undone": undone, "assignment": assignment,
               "progress": selectors.queue_progress(project=project, user=user)}
    if assignment is not None:
        item = selectors.item_for(assignment)
        _, criteria = _rubric_criteria(project)
        context.update(
            item=item, criteria=criteria,
            prompt_turns=render_turns(item["prompt"]["messages"], item["prompt"]["text"]),
            responses=[{**r, "turns": render_turns(r["messages"], r["text"])} for r in item["responses"]],
        )
    return context


def _render_item(request, project, assignment, status=200, **extra) -> HttpResponse:
    return render(request, "annotation/workbench.html#item", _item_context(project, request.user, assignment, **extra),
                  status=status)


@login_required
def workbench(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.LABEL)
    assignment, error = None, ""
    try:
        assignment = services.assignment_next(project=project, user=request.user)
    except LabelConflict as exc:
        error = str(exc)
    context = _item_context(project, request.user, assignment, error=error)
    context.update(membership=membership, guidelines=render_markdown(project.guidelines or "_No guidelines yet._"),
                   workbench_keys=WORKBENCH_KEYS, key_help=key_help(PAIR_KEYS + ITEM_KEYS))
    return render(request, "annotation/workbench.html", context)


def _scores_from_post(post) -> dict:
    """Form fields score:<letter>:<criterion> -> {"A": {"criterion": value}}."""
    scores: dict[str, dict[str, str]] = {}
    for key, value in post.items():
        if key.startswith("score:") and value.strip() != "":
            _, letter, name = key.split(":", 2)
            scores.setdefault(letter, {})[name] = value
    return scores


@login_required
@require_POST
def workbench_label(request: HttpRequest, project_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.LABEL)
    post = request.POST
    try:
        assignment_id = int(post.get("assignment_id", ""))
    except ValueError:
        return _render_item(request, project, None, error="The form lost its item; reload the page.")
    ranking = [int(x) for x in post.get("ranking", "").split(",") if x.strip().isdigit()] or None
    strength = int(post["strength"]) if post.get("strength", "").isdigit() else None
    try:
        services.label_submit(project=project, user=request.user, assignment_id=assignment_id,
                              choice=post.get("choice", ""), strength=strength, ranking=ranking,
                              criterion_scores=_scores_from_post(post), rationale=post.get("rationale", ""))
    except (ValidationError, PermissionDenied, LabelConflict) as exc:
        message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        current = None
        try:
            current = services.assignment_next(project=project, user=request.user)
        except LabelConflict:
            pass
        return _render_item(request, project, current, error=message)
    return _next(request, project)


def _next(request, project, **extra) -> HttpResponse:
    if request.POST.get("mode") == "steps":
        return _render_step_item(request, project, **extra)
    try:
        assignment = services.assignment_next(project=project, user=request.user)
    except LabelConflict as exc:
        return _render_item(request, project, None, error=str(exc))
    return _render_item(request, project, assignment, **extra)


@login_required
@require_POST
def workbench_skip(request: HttpRequest, project_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.LABEL)
    try:
        services.assignment_skip(project=project, user=request.user,
                                 assignment_id=int(request.POST.get("assignment_id") or 0))
    except (PermissionDenied, LabelConflict, ValidationError) as exc:
        if request.POST.get("mode") == "steps":
            return _render_step_item(request, project, error=str(exc))
        return _render_item(request, project, None, error=str(exc))
    return _next(request, project)


# ------------------------------------------------------------------ step mode (issue 13)
# The same page, fragment and key mechanics as pairwise items (static/js/workbench.js); the item is a
# step item from services.step_item_next and its label goes to services.step_label_submit.

STEP_GRADE_NAMES = {k.arg: k.help for k in GRADE_KEYS["ternary"]}


def _step_item_context(project, user, error: str = "") -> dict:
    context = {"project": project, "error": error, "mode": "steps",
               "progress": selectors.step_queue_progress(project=project, user=user)}
    # After a refused label the annotator is shown the item they still hold, with the reason.
    try:
        item = services.step_item_next(project_id=project.pk, user=user)
    except LabelConflict as exc:
        item, context["error"] = None, error or str(exc)
    if item is not None:
        suggestion = item.get("suggestion")
        steps = []
        for s in item["steps"]:
            suggested = suggestion["grades"][s["index"]] if suggestion else None
            steps.append({**s, "suggested": suggested, "suggested_name": (
                "" if suggested is None else STEP_GRADE_NAMES.get(suggested, str(suggested))
                if item["scale"] == "ternary" else str(suggested))})
        context.update(item=item, steps=steps, suggestion=suggestion,
                       prompt_turns=render_turns(item["prompt"]["messages"], item["prompt"]["text"]))
    return context


def _render_step_item(request, project, error: str = "", status: int = 200, **_) -> HttpResponse:
    return render(request, "annotation/workbench.html#item", _step_item_context(project, request.user, error=error),
                  status=status)


@login_required
def workbench_steps(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.LABEL)
    context = _step_item_context(project, request.user)
    context.update(membership=membership, guidelines=render_markdown(project.guidelines or "_No guidelines yet._"),
                   workbench_keys=WORKBENCH_KEYS,
                   key_help=key_help(STEP_KEYS + tuple(k for grades in GRADE_KEYS.values() for k in grades)))
    return render(request, "annotation/workbench.html", context)


def _optional_int(post, name: str) -> int | None:
    value = post.get(name, "").strip()
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationError({name: f"'{value}' is not a whole number."}) from None


@login_required
@require_POST
def workbench_step_label(request: HttpRequest, project_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.LABEL)
    post = request.POST
    try:
        # grades: one per step, comma-separated, as the keys set them (the service checks each one)
        grades = [int(g) for g in post.get("grades", "").split(",") if g.strip() != ""]
        services.step_label_submit(project_id=project.pk, user=request.user,
                                   assignment_id=_optional_int(post, "assignment_id"), grades=grades,
                                   first_error=_optional_int(post, "first_error"), note=post.get("note", ""),
                                   suggestion_id=_optional_int(post, "suggestion_id"))
    except ValueError:
        return _render_step_item(request, project, error="Grade every step before you submit.")
    except (ValidationError, PermissionDenied, LabelConflict) as exc:
        return _render_step_item(request, project, error="; ".join(_field_errors(exc) if isinstance(
            exc, ValidationError) else [str(exc)]))
    return _render_step_item(request, project)


@login_required
@require_POST
def workbench_undo(request: HttpRequest, project_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.LABEL)
    try:
        assignment = services.label_undo_last(project=project, user=request.user)
    except LabelConflict as exc:
        return _next(request, project, error=str(exc))
    return _render_item(request, project, assignment, undone=True)


@login_required
@require_POST
def dataset_build_comparisons(request: HttpRequest, project_id: int, dataset_id: int) -> HttpResponse:
    """The dataset page's "Build comparisons" form (its 422 is that page again, with the form's errors)."""
    project, membership = project_for_user(request.user, project_id, Capability.DESIGN)
    dataset = dataset_get(project=project, dataset_id=dataset_id)
    form = BuildComparisonsForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        with service_errors_on(form):
            created = services.comparisons_build(project=project, dataset=dataset, strategy=data["strategy"],
                                                 pairs_per_prompt=data["pairs_per_prompt"] or 1,
                                                 ranking_size=data["ranking_size"] or 0, overlap=data["overlap"],
                                                 seed=data["seed"] or 0)
            messages.success(request, f"Created {created} comparison{'s' if created != 1 else ''}.")
            return redirect("comparison_list", project_id=project.pk)
    return render(request, "datasets/dataset_detail.html", {
        "project": project, "membership": membership, "dataset": dataset, "can_design": True, "build_form": form,
        "rows": prompt_list(dataset=dataset, limit=20)}, status=422)


@login_required
def comparison_list(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    if request.method == "POST":
        project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
        try:
            overlap = int(request.POST.get("overlap", ""))
        except ValueError:
            messages.error(request, "Overlap must be a whole number of annotators.")
        else:
            with service_errors_as_messages(request):
                n = services.comparisons_set_overlap(project=project, overlap=overlap)
                messages.success(request, f"Overlap set to {overlap} on {n} comparisons.")
        return redirect("comparison_list", project_id=project.pk)
    qs = selectors.comparison_list(project=project).select_related("prompt")
    return render(request, "annotation/comparison_list.html", {
        "project": project, "membership": membership, "comparisons": qs[:200], "total": qs.count(),
        "progress": selectors.queue_progress(project=project),
        "can_design": role_allows(membership.role, Capability.DESIGN),
    })


@login_required
def agreement(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    result = selectors.agreement_for(project=project)
    report = result["report"]
    return render(request, "annotation/agreement.html", {
        "project": project, "membership": membership, "report": report, "n_labels": result["n_labels"],
        "ordinal_alpha": result["ordinal_alpha"], "ordinal_by_pair_kind": result["ordinal_by_pair_kind"],
        "pair_kinds": [(k, report.by_pair_kind[k], result["ordinal_by_pair_kind"][k]) for k in report.by_pair_kind],
        "annotators": selectors.annotator_stats(project=project),
        "rankings": result["rankings"], "n_rankings": result["n_rankings"],
        "ranking_pair_kinds": [(k, s, None) for k, s in result["rankings"].by_pair_kind.items()],
        "steps": _with_intervals(selectors.step_agreement(project=project)),
    })


def _with_intervals(report: dict) -> dict:
    """Step agreement with a 95% Wilson interval beside each rate the panel shows (a rate over 3 pairs is not
    one over 3,000)."""
    from rlcore.training.calibration import wilson_interval

    def add(block: dict, rate: str, n: str) -> None:
        if block.get(rate) is not None and block.get(n):
            block[rate + "_ci"] = wilson_interval(block[rate] * block[n], block[n])

    add(report["first_error"], "exact_match", "n_pairs")
    for name in ("human_lm", "human_lm_unprompted"):
        add(report[name], "agreement", "n_steps")
        for row in report[name]["by_position"] + report[name]["by_model"]:
            add(row, "agreement", "n_steps")
    return report


@login_required
def export(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    if "format" not in request.GET:
        return render(request, "annotation/export.html", {"project": project, "membership": membership,
                                                          "preview": selectors.export_preview(project=project),
                                                          "ensembles": selectors.ensembles(project=project)})
    try:
        job = request.GET.get("ensemble_job_id") or None
        path, summary = services.labels_export(project=project, fmt=request.GET.get("format", "jsonl"),
                                               conversational=request.GET.get("conversational") == "on",
                                               tie_policy=request.GET.get("tie_policy", "drop"),
                                               source=request.GET.get("source") or None,
                                               margin=request.GET.get("margin", "strength"),
                                               ensemble_job_id=int(job) if job and job.isdigit() else None)
    except (ValidationError, UserError) as exc:
        return render(request, "annotation/export.html", {"project": project, "membership": membership,
                                                          "ensembles": selectors.ensembles(project=project),
                                                          "errors": _field_errors(exc)}, status=422)
    return services.export_download(path, summary, asynchronous=isinstance(request, ASGIRequest))


# ------------------------------------------------------------------ label quality: audit, gold, raters, adjudication
# The pages call the selectors and services the API calls (webapp/annotation/apis.py); they hold no logic.


def _field_errors(exc: ValidationError | UserError) -> list[str]:
    if isinstance(exc, UserError):
        return [str(exc)]
    if not hasattr(exc, "error_dict"):
        return list(exc.messages)
    return [f"{e['field']}: {e['message']}" for e in error_list(exc)]


def _audit_params(data) -> dict:
    """The audit's inputs from a query or form; a value that is not a number is a ValidationError naming it."""
    params, errors = {}, {}
    for field, key, cast, default in (("ensemble_job_id", "job_id", int, None), ("z", "z", float, 1.0),
                                      ("t", "t", float, 0.0)):
        raw = (data.get(field) or "").strip()
        try:
            params[key] = cast(raw) if raw else default
        except ValueError:
            errors[field] = f"'{raw}' is not a number."
    if errors:
        raise ValidationError(errors)
    return params


@login_required
def label_audit(request: HttpRequest, project_id: int) -> HttpResponse:
    """Audit labels with a registered ensemble; POST sends the flagged comparisons back, in two steps: the
    first answers with what it would touch, the second (confirm=1) does it."""
    capability = Capability.DESIGN if request.method == "POST" else Capability.VIEW_DASHBOARDS
    project, membership = project_for_user(request.user, project_id, capability)
    data = request.POST if request.method == "POST" else request.GET
    flags = data.getlist("flags") or list(services.AUDIT_FLAGS)
    context = {"project": project, "membership": membership, "ensembles": selectors.ensembles(project=project),
               "params": {"job_id": None, "z": 1.0, "t": 0.0}, "flags": flags, "errors": [], "audit": None,
               "pending": None, "can_design": role_allows(membership.role, Capability.DESIGN)}
    try:
        params = context["params"] = _audit_params(data)
    except ValidationError as exc:
        context["errors"] = _field_errors(exc)
        return render(request, "annotation/label_audit.html", context, status=422)
    if params["job_id"] is None:
        if "ensemble_job_id" in data:
            context["errors"] = ["ensemble_job_id: pick a registered ensemble."]
        return render(request, "annotation/label_audit.html", context, status=422 if context["errors"] else 200)
    try:
        if request.method == "POST":
            sent = services.audit_send(project=project, ensemble_job_id=params["job_id"], z=params["z"],
                                       t=params["t"], flags=flags, confirm=data.get("confirm") == "1")
            if sent["done"]:
                messages.success(request, f"Sent {sent['comparisons']} comparisons ({sent['labels']} flagged labels) "
                                          f"back for adjudication; overlap raised on {sent['overlap_raised']}.")
                return redirect(f"{request.path}?ensemble_job_id={params['job_id']}&z={params['z']}&t={params['t']}")
            context["pending"] = sent
        result, comparison_of = selectors.ensemble_audit(project=project, **params)
    except (ValidationError, UserError) as exc:
        context["errors"] = _field_errors(exc)
        return render(request, "annotation/label_audit.html", context, status=422)
    context["audit"] = result
    context["flagged"] = [(p, comparison_of[p.pair_id]) for p in result.pairs if p.flag != "ok"]
    context["send_back"] = selectors.audit_preview(result, comparison_of)
    return render(request, "annotation/label_audit.html", context)


@login_required
def label_quality(request: HttpRequest, project_id: int) -> HttpResponse:
    """Raters: gold accuracy per annotator, Dawid-Skene per rater, LM judges per template version (the
    judging app's table, templates/judging/_template_agreement.html)."""
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    context = {"project": project, "membership": membership, "errors": [],
               "can_design": role_allows(membership.role, Capability.DESIGN),
               "gold": selectors.gold_scores(project=project)}
    try:
        context["raters"] = selectors.rater_reliability(project=project)
    except UserError as exc:
        context["raters"], context["raters_error"] = None, str(exc)
    return render(request, "annotation/label_quality.html", context)


@login_required
@require_POST
def gold_mark(request: HttpRequest, project_id: int) -> HttpResponse:
    """Mark comparisons as gold (from the comparisons, audit or raters page); back to where it was sent from."""
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    raw = request.POST.getlist("comparison_ids") or request.POST.get("comparison_id_list", "").replace(",", " ").split()
    try:
        ids = [int(x) for x in raw]
    except ValueError:
        messages.error(request, "comparison_ids: give comparison numbers, separated by commas or spaces.")
    else:
        try:
            n = services.gold_set(project=project, comparison_ids=ids, answer=request.POST.get("answer", ""))
        except ValidationError as exc:
            for message in _field_errors(exc):
                messages.error(request, message)
        else:
            answer = request.POST.get("answer", "").strip().lower()
            messages.success(request, f"{n} comparisons marked gold (answer {answer.upper()})." if answer
                             else f"{n} comparisons are normal items again.")
    back = request.POST.get("next", "")
    return redirect(back if back.startswith(f"/projects/{project.pk}/") else f"/projects/{project.pk}/quality/")


@login_required
def adjudication(request: HttpRequest, project_id: int) -> HttpResponse:
    """Disagreements side by side; a designer records the resolution (a label of kind 'adjudication')."""
    capability = Capability.DESIGN if request.method == "POST" else Capability.VIEW_DASHBOARDS
    project, membership = project_for_user(request.user, project_id, capability)
    errors = []
    if request.method == "POST":
        try:
            services.adjudication_record(project=project, user=request.user,
                                         comparison_id=int(request.POST.get("comparison_id") or 0),
                                         choice=request.POST.get("choice", ""),
                                         strength=int(request.POST.get("strength") or 1),
                                         rationale=request.POST.get("rationale", ""))
        except ValueError:
            errors = ["comparison_id / strength: whole numbers."]
        except ValidationError as exc:
            errors = _field_errors(exc)
        except LabelConflict as exc:
            errors = [str(exc)]
        else:
            messages.success(request, f"Resolution of comparison {request.POST.get('comparison_id')} recorded.")
            return redirect("adjudication", project_id=project.pk)
    return render(request, "annotation/adjudication.html", {
        "project": project, "membership": membership, "errors": errors,
        "items": selectors.disagreements(project=project),
        "can_design": role_allows(membership.role, Capability.DESIGN)}, status=422 if errors else 200)
