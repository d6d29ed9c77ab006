from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from webapp.annotation import selectors, services
from webapp.annotation.rendering import render_markdown, render_turns
from webapp.annotation.services import LabelConflict
from webapp.projects.permissions import Capability, project_for_user, role_allows

KEYS_PAIR = [("1", "A much better"), ("2", "A better"), ("3", "Tie"), ("4", "B better"), ("5", "B much better")]


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
                   keys=KEYS_PAIR)
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
        return _render_item(request, project, None, error=str(exc))
    return _next(request, project)


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
def comparison_list(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    if request.method == "POST":
        project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
        try:
            overlap = int(request.POST.get("overlap", ""))
        except ValueError:
            messages.error(request, "Overlap must be a whole number of annotators.")
        else:
            try:
                n = services.comparisons_set_overlap(project=project, overlap=overlap)
            except ValidationError as exc:
                for message in exc.messages:
                    messages.error(request, message)
            else:
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
    })


@login_required
def export(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW_DASHBOARDS)
    if "format" not in request.GET:
        return render(request, "annotation/export.html", {"project": project, "membership": membership,
                                                          "preview": selectors.export_preview(project=project)})
    try:
        path, summary = services.labels_export(project=project, fmt=request.GET.get("format", "jsonl"),
                                               conversational=request.GET.get("conversational") == "on",
                                               tie_policy=request.GET.get("tie_policy", "drop"),
                                               source=request.GET.get("source") or None)
    except ValidationError as exc:
        return render(request, "annotation/export.html", {"project": project, "membership": membership,
                                                          "errors": exc.messages}, status=422)
    return services.export_download(path, summary, asynchronous=isinstance(request, ASGIRequest))
