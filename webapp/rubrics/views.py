"""Pages: the rubric editor (htmx validation and live preview), versions and diffs, the reward spec composer."""

from __future__ import annotations

import copy
from typing import Any, get_args

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from rlcore.rewards.spec import DEFAULT_WEIGHT, Normalization
from webapp.projects.permissions import Capability, project_for_user, role_allows
from webapp.readers import readers
from webapp.rubrics import editor, selectors, services
from webapp.rubrics.contracts import dump_yaml, load_yaml_document, parse_rubric
from webapp.rubrics.diffs import definition_diff
from webapp.rubrics.models import RewardSpec, RewardSpecVersion, Rubric, RubricVersion

SPEC_TEMPLATE = """name: {name}
description: ''
normalization: none        # {normalizations}
components:
  - kind: rubric_rules     # a saved rubric's rule criteria; rubric://<name>@<version> pins a version
    name: rubric
    rubric_path: rubric://{rubric}
    weight: {weight}
  - kind: length_penalty
    name: overlong
    max_length: 512
    cache_length: 128
    unit: words
    weight: 0.5
"""

NORMALIZATIONS = get_args(Normalization)

# What "Add component" appends, by kind; the user edits the values in the YAML afterwards.
COMPONENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "rubric_rules": {"rubric_path": "rubric://{rubric}"},
    "rubric_judge": {"rubric_path": "rubric://{rubric}"},
    "reward_model": {"path": "{path}"},
    "verifier": {"reference_column": "answer", "mode": "math"},
    "length_penalty": {"max_length": 512, "cache_length": 128, "unit": "tokens"},
    # a registered PRM (Training page); its step separator is read from the model folder's rlcore_prm.json
    "process_reward_model": {"path": "{prm_path}", "aggregation": "min", "split": {"kind": "newline", "min_steps": 1}},
}


def _can(membership) -> dict[str, bool]:
    return {c.value: role_allows(membership.role, c) for c in Capability}


@login_required
def rubric_list(request: HttpRequest, project_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW)
    return render(request, "rubrics/rubric_list.html", {
        "project": project, "can": _can(membership),
        "rubrics": selectors.rubric_list(project=project), "specs": selectors.reward_spec_list(project=project),
    })


# ---------------------------------------------------------------- the rubric editor


def _pinned_rows(project, ref: str) -> list[dict[str, Any]]:
    """Rows put first in the live preview: ``overopt:<report id>:<gap sample index>`` is a flagged sample of
    an over-optimisation report (the designer came from it to change the rubric); anything else, none."""
    row = readers.overopt_preview_row(project=project, ref=ref) if ref else None
    return [row] if row else []


def _check_context(project, state: dict[str, Any], rubric: Rubric | None, judge_config=None,
                   pinned: str = "") -> dict[str, Any]:
    """Validate the editor state with rlcore; when valid, preview it on the project's sample responses
    (with ``judge_config``: fewer of them, its judge grading the criteria without a rule), ``pinned`` first."""
    definition, errors = editor.definition_from_state(state)
    contract = None
    if not errors:
        try:
            contract = parse_rubric(definition, selectors.project_columns(project=project))
        except ValidationError as exc:
            errors = exc.message_dict
    # A required input not typed yet is "to fill in", not an error (saving still reports it).
    blank = editor.blank_rule_fields(state)
    to_fill = [(blank[f], f.rpartition(".")[2]) for f in errors if f in blank]
    errors = {f: m for f, m in errors.items() if f not in blank}
    per, rest = editor.errors_by_criterion(errors, len(state["criteria"]))
    preview, baseline, judges = None, None, []
    if contract is not None:
        baseline = selectors.rubric_latest(rubric=rubric) if rubric else None
        first = _pinned_rows(project, pinned)
        try:
            preview = selectors.rubric_preview(project=project, contract=contract, baseline=baseline,
                                               judge_config=judge_config, first=first)
        except ValidationError as exc:  # a judge that cannot preview: say so beside the preview without it
            rest = [*rest, ("judge_config", " ".join(exc.messages))]
            judge_config = None
            preview = selectors.rubric_preview(project=project, contract=contract, baseline=baseline, first=first)
        if judge_config is None and preview["judged_criteria"] and preview["items"]:
            judges = list(readers.preview_judge_list(project=project))
    n = len(state["criteria"])
    return {"errors": errors, "rows": list(zip(range(n), state["criteria"], [per[i] for i in range(n)])),
            "rubric_errors": rest, "to_fill": to_fill, "preview": preview, "baseline": baseline if preview and preview["has_baseline"]
            else None, "valid": contract is not None, "judges": judges, "pinned": pinned}


def _editor_context(project, state, rubric, pinned: str = "", **extra) -> dict[str, Any]:
    return {"project": project, "rubric": rubric, "state": state, "rule_kinds": editor.RULE_KINDS,
            "format_checks": editor.FORMAT_CHECKS, "menus": editor.MENUS, **_check_context(project, state, rubric, pinned=pinned), **extra}


def _editing(request, project_id: int, rubric_id: int | None):
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    rubric = get_object_or_404(Rubric, project=project, pk=rubric_id) if rubric_id else None
    return project, rubric


@login_required
def rubric_new(request: HttpRequest, project_id: int) -> HttpResponse:
    return _rubric_editor(request, project_id, None)


@login_required
def rubric_edit(request: HttpRequest, project_id: int, rubric_id: int) -> HttpResponse:
    return _rubric_editor(request, project_id, rubric_id)


def _rubric_editor(request: HttpRequest, project_id: int, rubric_id: int | None) -> HttpResponse:
    project, rubric = _editing(request, project_id, rubric_id)
    if request.method == "POST":
        state = editor.state_from_post(request.POST)
        definition, form_errors = editor.definition_from_state(state)
        note = request.POST.get("note", "")
        try:
            if form_errors:
                raise ValidationError(form_errors)
            if rubric is None:
                version = services.rubric_create(project=project, user=request.user, name=state["name"],
                                                 definition=definition, note=note)
            else:
                version = services.rubric_version_create(rubric=rubric, user=request.user, definition=definition,
                                                         note=note)
        except ValidationError as exc:
            context = _editor_context(project, state, rubric, pinned=request.POST.get("pinned", ""), note=note)
            if hasattr(exc, "error_dict"):
                n = len(state["criteria"])
                per, context["rubric_errors"] = editor.errors_by_criterion(exc.message_dict, n)
                context["errors"] = exc.message_dict
                context["rows"] = list(zip(range(n), state["criteria"], [per[i] for i in range(n)]))
                context["valid"] = False
            return render(request, "rubrics/rubric_editor.html", context, status=422)
        messages.success(request, f"Saved {version.rubric.name} version {version.number}.")
        return redirect("rubric_detail", project_id=project.pk, rubric_id=version.rubric_id)
    if rubric is not None:
        latest = selectors.rubric_latest(rubric=rubric)
        state = editor.state_from_definition(latest.definition)
    else:
        state = editor.state_from_definition({"name": "", "criteria": []})
        state["criteria"].append(editor.blank_criterion(1))
    return render(request, "rubrics/rubric_editor.html",
                  _editor_context(project, state, rubric, pinned=request.GET.get("pinned", "")))


@login_required
@require_POST
def rubric_check(request: HttpRequest, project_id: int) -> HttpResponse:
    """htmx, as the user types: the errors (inline, per criterion) and the live preview."""
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    rubric = Rubric.objects.filter(project=project, pk=request.POST.get("rubric_id") or 0).first()
    state = editor.state_from_post(request.POST)
    return render(request, "rubrics/rubric_editor.html#check", {
        "project": project, "state": state, "errors_oob": True,
        **_check_context(project, state, rubric, pinned=request.POST.get("pinned", ""))})


@login_required
@require_POST
def rubric_judge_preview(request: HttpRequest, project_id: int) -> HttpResponse:
    """htmx, on "Grade with this judge": the live preview with the rule-less criteria graded by an LM judge."""
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    rubric = Rubric.objects.filter(project=project, pk=request.POST.get("rubric_id") or 0).first()
    config = get_object_or_404(readers.judge_config_list(project=project),
                               pk=request.POST.get("judge_config_id") or 0)
    state = editor.state_from_post(request.POST)
    return render(request, "rubrics/rubric_editor.html#check", {
        "project": project, "state": state, "errors_oob": True,
        **_check_context(project, state, rubric, judge_config=config, pinned=request.POST.get("pinned", ""))})


@login_required
@require_POST
def rubric_rows(request: HttpRequest, project_id: int) -> HttpResponse:
    """htmx: add, remove, move a criterion or change its rule kind; re-renders the criteria and the check."""
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    rubric = Rubric.objects.filter(project=project, pk=request.POST.get("rubric_id") or 0).first()
    state = editor.apply_action(editor.state_from_post(request.POST), request.POST.get("action", ""))
    return render(request, "rubrics/rubric_editor.html#rows", {
        **_editor_context(project, state, rubric, pinned=request.POST.get("pinned", "")), "oob": True})


# ---------------------------------------------------------------- rubric versions


@login_required
def rubric_detail(request: HttpRequest, project_id: int, rubric_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW)
    rubric = get_object_or_404(Rubric, project=project, pk=rubric_id)
    versions = list(rubric.versions.select_related("created_by").order_by("-number"))
    return render(request, "rubrics/rubric_detail.html", {
        "project": project, "rubric": rubric, "versions": versions, "latest": versions[0] if versions else None,
        "yaml": dump_yaml(versions[0].definition) if versions else "", "can": _can(membership),
    })


@login_required
def rubric_version(request: HttpRequest, project_id: int, rubric_id: int, number: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW)
    version = get_object_or_404(RubricVersion, rubric__project=project, rubric_id=rubric_id, number=number)
    return render(request, "rubrics/version.html", {
        "project": project, "thing": version.rubric, "version": version, "yaml": dump_yaml(version.definition),
        "kind": "rubric", "back": "rubric_detail"})


@login_required
@require_POST
def rubric_annotation(request: HttpRequest, project_id: int, rubric_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    rubric = get_object_or_404(Rubric, project=project, pk=rubric_id)
    on = request.POST.get("use_for_annotation") == "1"
    services.rubric_set_annotation(rubric=rubric, use_for_annotation=on)
    messages.success(request, f"Annotators {'now see' if on else 'no longer see'} {rubric.name}.")
    return redirect("rubric_detail", project_id=project.pk, rubric_id=rubric.pk)


def _remove(request, project_id: int, model, pk: int, remove, detail: str, what: str) -> HttpResponse:
    """POST "Remove": the service deletes the thing, or says what still uses it (shown on its page)."""
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    thing = get_object_or_404(model, project=project, pk=pk)
    try:
        name = remove(thing)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(detail, project.pk, thing.pk)
    messages.success(request, f"{what} '{name}' and its versions were removed.")
    return redirect("rubric_list", project_id=project.pk)


@login_required
@require_POST
def rubric_delete(request: HttpRequest, project_id: int, rubric_id: int) -> HttpResponse:
    return _remove(request, project_id, Rubric, rubric_id, lambda r: services.rubric_delete(rubric=r),
                   "rubric_detail", "Rubric")


@login_required
@require_POST
def spec_delete(request: HttpRequest, project_id: int, spec_id: int) -> HttpResponse:
    return _remove(request, project_id, RewardSpec, spec_id, lambda s: services.reward_spec_delete(spec=s),
                   "spec_detail", "Reward spec")


def _diff_page(request, project, thing, versions_qs, items_key: str, kind: str) -> HttpResponse:
    numbers = list(versions_qs.values_list("number", flat=True).order_by("number"))
    try:
        a = int(request.GET.get("a") or (numbers[-2] if len(numbers) > 1 else numbers[0]))
        b = int(request.GET.get("b") or numbers[-1])
    except (ValueError, IndexError):
        a = b = None
    old = versions_qs.filter(number=a).first() if a else None
    new = versions_qs.filter(number=b).first() if b else None
    diff = definition_diff(old.definition, new.definition, items_key=items_key) if old and new else None
    return render(request, "rubrics/diff.html", {
        "project": project, "thing": thing, "numbers": numbers, "a": a, "b": b, "diff": diff, "kind": kind,
        "items_noun": "criterion" if items_key == "criteria" else "component",
    }, status=200 if diff is not None else 404)


@login_required
def rubric_diff(request: HttpRequest, project_id: int, rubric_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.VIEW)
    rubric = get_object_or_404(Rubric, project=project, pk=rubric_id)
    return _diff_page(request, project, rubric, rubric.versions.all(), "criteria", "rubric")


# ---------------------------------------------------------------- reward specs


def _spec_check(project, text: str) -> dict[str, Any]:
    """Validate composer YAML (rubric references resolved, columns checked); preview the fast components."""
    errors: dict[str, list[str]] = {}
    preview = None
    try:
        contract = services.reward_spec_document_check(project=project, text=text)
    except ValidationError as exc:
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"yaml": exc.messages}
    else:
        preview = selectors.spec_preview(contract=contract, project=project)
    return {"errors": errors, "preview": preview, "valid": not errors,
            "columns": selectors.project_columns(project=project)}


@login_required
def spec_new(request: HttpRequest, project_id: int) -> HttpResponse:
    return _spec_composer(request, project_id, None)


@login_required
def spec_edit(request: HttpRequest, project_id: int, spec_id: int) -> HttpResponse:
    return _spec_composer(request, project_id, spec_id)


def _spec_composer(request: HttpRequest, project_id: int, spec_id: int | None) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    spec = get_object_or_404(RewardSpec, project=project, pk=spec_id) if spec_id else None
    if request.method == "POST":
        text = request.POST.get("yaml", "")
        if upload := request.FILES.get("file"):
            text = upload.read().decode("utf-8", errors="replace")
        note = request.POST.get("note", "")
        try:
            version = services.reward_spec_document_save(project=project, user=request.user, text=text, note=note,
                                                         spec=spec)
        except ValidationError as exc:
            context = {"project": project, "spec": spec, "yaml": text, "note": note, **_composer_choices(project),
                   "relaunch": request.POST.get("relaunch", ""), **_spec_check(project, text)}
            context["errors"] = exc.message_dict if hasattr(exc, "error_dict") else {"yaml": exc.messages}
            context["valid"] = False
            return render(request, "rubrics/spec_composer.html", context, status=422)
        messages.success(request, f"Saved {version.spec.name} version {version.number}.")
        if (run_id := request.POST.get("relaunch", "")).isdigit():  # save and relaunch is one step (issue 11)
            return redirect(reverse("grpo_launch", kwargs={"project_id": project.pk})
                            + f"?clone={run_id}&reward_spec_version={version.pk}")
        return redirect("spec_detail", project_id=project.pk, spec_id=version.spec_id)
    if spec is not None:
        text = dump_yaml(selectors.spec_for_editing(version=selectors.spec_latest(spec=spec)))
    else:
        first = selectors.rubric_list(project=project).first()
        text = SPEC_TEMPLATE.format(name="my-reward", rubric=first.name if first else "<rubric name>",
                                    weight=DEFAULT_WEIGHT, normalizations=" | ".join(NORMALIZATIONS))
    return render(request, "rubrics/spec_composer.html", {
        "project": project, "spec": spec, "yaml": text, **_composer_choices(project),
        "relaunch": request.GET.get("relaunch", "") if request.GET.get("relaunch", "").isdigit() else "",
        **_spec_check(project, text)})


def _composer_choices(project) -> dict[str, Any]:
    return {"component_kinds": list(COMPONENT_DEFAULTS), "default_weight": DEFAULT_WEIGHT,
            "normalizations": NORMALIZATIONS,
            "rubrics": selectors.rubric_list(project=project),
            "reward_models": readers.reward_model_list(project=project),
            "process_reward_models": readers.prm_list(project=project)}


@login_required
@require_POST
def spec_add_component(request: HttpRequest, project_id: int) -> HttpResponse:
    """htmx: append a component of the chosen kind to the YAML (re-dumped; comments are not kept)."""
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    text = request.POST.get("yaml", "")
    kind = request.POST.get("add_kind", "")
    try:
        data = load_yaml_document(text)
    except ValidationError:
        data = None
    if isinstance(data, dict) and kind in COMPONENT_DEFAULTS:
        components = data.get("components") if isinstance(data.get("components"), list) else []
        taken = {c.get("name") for c in components if isinstance(c, dict)}
        name = (request.POST.get("add_name") or "").strip() or kind
        base, n = name, 2
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        try:
            weight = float(request.POST.get("add_weight") or DEFAULT_WEIGHT)
        except ValueError:
            weight = DEFAULT_WEIGHT
        prm_path = request.POST.get("add_prm_path") or ""
        if not prm_path:  # the newest registered PRM, so the added component runs as it is
            prm_path = next(iter(readers.prm_list(project=project).values_list("path", flat=True)[:1]),
                            "/path/to/process-reward-model")
        fields = {k: v.format(rubric=request.POST.get("add_rubric") or "<rubric name>",
                              path=request.POST.get("add_path") or "/path/to/reward-model",
                              prm_path=prm_path) if isinstance(v, str) else copy.deepcopy(v)
                  for k, v in COMPONENT_DEFAULTS[kind].items()}
        data["components"] = [*components, {"kind": kind, "name": name, **fields, "weight": weight}]
        text = dump_yaml(data)
    return render(request, "rubrics/spec_composer.html#yaml", {
        "project": project, "yaml": text, "oob": True, **_spec_check(project, text)})


@login_required
@require_POST
def spec_check(request: HttpRequest, project_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    return render(request, "rubrics/spec_composer.html#check",
                  {"project": project, **_spec_check(project, request.POST.get("yaml", ""))})


@login_required
def spec_detail(request: HttpRequest, project_id: int, spec_id: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW)
    spec = get_object_or_404(RewardSpec, project=project, pk=spec_id)
    versions = list(spec.versions.select_related("created_by").prefetch_related("rubric_versions__rubric")
                    .order_by("-number"))
    return render(request, "rubrics/spec_detail.html", {
        "project": project, "spec": spec, "versions": versions, "latest": versions[0] if versions else None,
        "yaml": dump_yaml(versions[0].definition) if versions else "", "can": _can(membership),
    })


@login_required
def spec_version(request: HttpRequest, project_id: int, spec_id: int, number: int) -> HttpResponse:
    project, membership = project_for_user(request.user, project_id, Capability.VIEW)
    version = get_object_or_404(RewardSpecVersion, spec__project=project, spec_id=spec_id, number=number)
    return render(request, "rubrics/version.html", {
        "project": project, "thing": version.spec, "version": version, "yaml": dump_yaml(version.definition),
        "kind": "reward spec", "back": "spec_detail", "can": _can(membership)})


@login_required
@require_POST
def spec_version_serve(request: HttpRequest, project_id: int, spec_id: int, number: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.DESIGN)
    version = get_object_or_404(RewardSpecVersion, spec__project=project, spec_id=spec_id, number=number)
    try:
        job = services.reward_spec_serve(version=version, user=request.user)
    except ValidationError as exc:
        for message in exc.messages:
            messages.error(request, message)
        return redirect("spec_version", project_id=project.pk, spec_id=spec_id, number=number)
    return redirect("job_detail", project_id=project.pk, job_id=job.pk)


@login_required
def spec_diff(request: HttpRequest, project_id: int, spec_id: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.VIEW)
    spec = get_object_or_404(RewardSpec, project=project, pk=spec_id)
    return _diff_page(request, project, spec, spec.versions.all(), "components", "reward spec")


@login_required
def version_yaml(request: HttpRequest, project_id: int, kind: str, thing_id: int, number: int) -> HttpResponse:
    project, _ = project_for_user(request.user, project_id, Capability.VIEW)
    model = RubricVersion if kind == "rubrics" else RewardSpecVersion
    lookup = {"rubric_id": thing_id, "rubric__project": project} if kind == "rubrics" else \
        {"spec_id": thing_id, "spec__project": project}
    version = get_object_or_404(model, number=number, **lookup)
    response = HttpResponse(dump_yaml(version.definition), content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{kind[:-1]}-{thing_id}-v{number}.yaml"'
    return response
