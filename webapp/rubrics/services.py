"""Writes for rubrics and reward specs. Every save is a new immutable version, validated by rlcore first.

Each service raises ValidationError keyed by the field at fault (``criteria[1].rule.pattern``), with a
message naming the criterion or component, so forms and the API show it where the user typed.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max

from webapp.projects.models import Project
from webapp.readers import readers
from webapp.rubrics import selectors
from webapp.rubrics.contracts import load_yaml_document, parse_rubric, parse_spec, with_lines
from webapp.rubrics.models import RewardSpec, RewardSpecVersion, Rubric, RubricVersion

# A rubric component may name a saved rubric instead of inlining one: "rubric://<name>" (latest version)
# or "rubric://<name>@<version>". The saved spec inlines it (training needs nothing from the database) and
# records which rubric version it used.
RUBRIC_REF = re.compile(r"^rubric://(?P<name>.+?)(?:@v?(?P<number>\d+))?$")


def _clean_name(name: str, noun: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": f"A {noun} needs a name."})
    if len(name) > 120:
        raise ValidationError({"name": f"A {noun} name has at most 120 characters."})
    return name


def _named(definition: Any, name: str) -> Any:
    """The definition carrying the saved thing's name (one name, whatever the posted body said)."""
    return {**definition, "name": name} if isinstance(definition, dict) else definition


# ---------------------------------------------------------------- rubrics


@transaction.atomic
def rubric_create(*, project: Project, user, name: str, definition: dict[str, Any], note: str = "",
                  use_for_annotation: bool = False) -> RubricVersion:
    """A new rubric with its first version."""
    name = _clean_name(name, "rubric")
    contract = parse_rubric(_named(definition, name), selectors.project_columns(project=project))
    if Rubric.objects.filter(project=project, name__iexact=name).exists():
        raise ValidationError({"name": f"A rubric named '{name}' already exists in this project."})
    try:
        with transaction.atomic():  # a concurrent create of the same name loses here, cleanly
            rubric = Rubric.objects.create(project=project, name=name, created_by=user)
    except IntegrityError:
        raise ValidationError({"name": f"A rubric named '{name}' already exists in this project."}) from None
    if use_for_annotation:
        rubric_set_annotation(rubric=rubric, use_for_annotation=True)
    return _rubric_version_add(rubric=rubric, user=user, contract=contract, note=note)


@transaction.atomic
def rubric_version_create(*, rubric: Rubric, user, definition: dict[str, Any], note: str = "") -> RubricVersion:
    """Save a rubric's next version (the old ones stay as they were)."""
    contract = parse_rubric(_named(definition, rubric.name), selectors.project_columns(project=rubric.project))
    return _rubric_version_add(rubric=rubric, user=user, contract=contract, note=note)


def _rubric_version_add(*, rubric: Rubric, user, contract, note: str) -> RubricVersion:
    # Lock the rubric row so two saves at once get numbers n and n+1, not both n.
    Rubric.objects.select_for_update().get(pk=rubric.pk)
    last = rubric.versions.aggregate(n=Max("number"))["n"] or 0
    return RubricVersion.objects.create(
        rubric=rubric, number=last + 1, definition=contract.model_dump(mode="json"),
        note=(note or "").strip()[:500], created_by=user,
    )


@transaction.atomic
def rubric_set_annotation(*, rubric: Rubric, use_for_annotation: bool) -> Rubric:
    """Mark (or unmark) the rubric annotators see; at most one per project, so marking one unmarks the others."""
    if use_for_annotation:
        list(Rubric.objects.select_for_update().filter(project_id=rubric.project_id))  # serialise markers
        Rubric.objects.filter(project_id=rubric.project_id, use_for_annotation=True).exclude(pk=rubric.pk).update(
            use_for_annotation=False)
    Rubric.objects.filter(pk=rubric.pk).update(use_for_annotation=use_for_annotation)
    rubric.use_for_annotation = use_for_annotation
    return rubric


# ---------------------------------------------------------------- reward specs


def resolve_rubric_refs(*, project: Project, definition: dict[str, Any]) -> tuple[dict[str, Any], list[RubricVersion]]:
    """Inline every ``rubric_path: rubric://name[@n]`` with that saved rubric version."""
    components = definition.get("components") if isinstance(definition, dict) else None
    if not isinstance(components, list):
        return definition, []
    used, out = [], []
    for i, component in enumerate(components):
        ref = component.get("rubric_path") if isinstance(component, dict) else None
        match = RUBRIC_REF.match(ref) if isinstance(ref, str) else None
        if isinstance(ref, str) and ref.startswith("rubric://") and match is None:
            raise ValidationError({f"components[{i}].rubric_path": "write rubric://<name> or rubric://<name>@<version>"})
        if match is None:
            out.append(component)
            continue
        name, number = match["name"], match["number"]
        who = f"component {component.get('name')!r}" if component.get("name") else f"component {i + 1}"
        rubric = Rubric.objects.filter(project=project, name__iexact=name).first()
        if rubric is None:
            raise ValidationError({f"components[{i}].rubric_path": f"{who}: no rubric named '{name}' in this project"})
        version = rubric.versions.filter(number=int(number)).first() if number else rubric.versions.first()
        if version is None:
            raise ValidationError({f"components[{i}].rubric_path":
                                   f"{who}: rubric '{rubric.name}' has no version {number}"})
        used.append(version)
        out.append({**{k: v for k, v in component.items() if k != "rubric_path"}, "rubric": version.definition})
    return {**definition, "components": out}, used


def reward_spec_parse(*, project: Project, definition: dict[str, Any]):
    """(the valid RewardSpec a save would store, the rubric versions it inlined): ``rubric://`` references
    resolved, then checked once (``parse_spec``, against the project's columns); or ValidationError."""
    resolved, used = resolve_rubric_refs(project=project, definition=definition)
    contract = parse_spec(resolved, selectors.project_columns(project=project))
    return contract, used


@transaction.atomic
def reward_spec_create(*, project: Project, user, name: str, definition: dict[str, Any],
                       note: str = "") -> RewardSpecVersion:
    """A new reward spec with its first version."""
    name = _clean_name(name, "reward spec")
    contract, used = reward_spec_parse(project=project, definition=_named(definition, name))
    if RewardSpec.objects.filter(project=project, name__iexact=name).exists():
        raise ValidationError({"name": f"A reward spec named '{name}' already exists in this project."})
    try:
        with transaction.atomic():
            spec = RewardSpec.objects.create(project=project, name=name, created_by=user)
    except IntegrityError:
        raise ValidationError({"name": f"A reward spec named '{name}' already exists in this project."}) from None
    return _spec_version_add(spec=spec, user=user, contract=contract, used=used, note=note)


@transaction.atomic
def reward_spec_version_create(*, spec: RewardSpec, user, definition: dict[str, Any], note: str = "") -> RewardSpecVersion:
    """Save a reward spec's next version."""
    contract, used = reward_spec_parse(project=spec.project, definition=_named(definition, spec.name))
    return _spec_version_add(spec=spec, user=user, contract=contract, used=used, note=note)


def _spec_version_add(*, spec: RewardSpec, user, contract, used: list[RubricVersion], note: str) -> RewardSpecVersion:
    RewardSpec.objects.select_for_update().get(pk=spec.pk)
    last = spec.versions.aggregate(n=Max("number"))["n"] or 0
    version = RewardSpecVersion.objects.create(
        spec=spec, number=last + 1, definition=contract.model_dump(mode="json", by_alias=True),
        note=(note or "").strip()[:500], created_by=user,
    )
    if used:
        version.rubric_versions.set(used)
    return version


def _document(text: str, items: str) -> dict[str, Any]:
    """A rubric or spec document (YAML or JSON) as data; a syntax error names the line."""
    data = load_yaml_document(text)
    if not isinstance(data, dict):
        raise ValidationError({"yaml": f"YAML, line 1: expected a mapping with 'name' and '{items}'"})
    return data


def _import_document(*, text: str, items: str, find, create_version, create):
    """A YAML (or JSON) document becomes a new version of the object ``find`` gives for its name, or a new
    object; errors carry the document's line numbers."""
    data = _document(text, items)
    name = str(data.get("name") or "").strip()
    try:
        existing = find(name)
        return create_version(existing, data) if existing is not None else create(name, data)
    except ValidationError as exc:
        raise with_lines(exc, text) from None


def reward_spec_document_check(*, project: Project, text: str):
    """The composer's live check: the document as the valid RewardSpec its save would store (rubric references
    inlined, the project's columns checked), or the ValidationError the save would raise, with line numbers."""
    data = _document(text, "components")
    try:
        return reward_spec_parse(project=project, definition=data)[0]
    except ValidationError as exc:
        raise with_lines(exc, text) from None


def _spec_document(*, project: Project, user, text: str, note: str, find) -> RewardSpecVersion:
    return _import_document(
        text=text, items="components", find=find,
        create_version=lambda spec, data: reward_spec_version_create(spec=spec, user=user, definition=data, note=note),
        create=lambda name, data: reward_spec_create(project=project, user=user, name=name, definition=data, note=note))


@transaction.atomic
def reward_spec_import(*, project: Project, user, text: str, note: str = "") -> RewardSpecVersion:
    """Import a YAML (or JSON) spec: a new version of the spec with its name, or a new spec."""
    return _spec_document(project=project, user=user, text=text, note=note or "imported",
                          find=lambda name: RewardSpec.objects.filter(project=project, name__iexact=name).first()
                          if name else None)


@transaction.atomic
def reward_spec_document_save(*, project: Project, user, text: str, note: str = "",
                              spec: RewardSpec | None = None) -> RewardSpecVersion:
    """The composer's save of its YAML (typed or an uploaded file): the next version of ``spec`` whatever name
    the document gives, or, without one, a new spec under the document's name. Parsed and validated as an
    import is; errors carry the document's line numbers."""
    return _spec_document(project=project, user=user, text=text, note=note, find=lambda _name: spec)


@transaction.atomic
def rubric_import(*, project: Project, user, text: str, note: str = "") -> RubricVersion:
    """Import a YAML (or JSON) rubric: a new version of the rubric with its name, or a new rubric."""
    note = note or "imported"
    return _import_document(
        text=text, items="criteria",
        find=lambda name: Rubric.objects.filter(project=project, name__iexact=name).first() if name else None,
        create_version=lambda rubric, data: rubric_version_create(rubric=rubric, user=user, definition=data, note=note),
        create=lambda name, data: rubric_create(project=project, user=user, name=name, definition=data, note=note))


# ------------------------------------------------------------------ removal


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def rubric_uses(rubric: Rubric) -> list[str]:
    """What still points at any version of the rubric (its versions are the record of what those used)."""
    versions = rubric.versions.all()
    uses = []
    if n := readers.labels_scored_with(rubric_versions=versions):
        uses.append(f"{_plural(n, 'label')} scored with it")
    if n := readers.lm_runs_graded_with(rubric_versions=versions):
        uses.append(f"{_plural(n, 'LM labelling run')}")
    specs = sorted({str(v) for v in RewardSpecVersion.objects.filter(rubric_versions__in=versions)
                    .select_related("spec")})
    if specs:
        uses.append("reward spec " + ", ".join(specs))
    return uses


@transaction.atomic
def rubric_delete(*, rubric: Rubric) -> str:
    """Remove a rubric and all its versions, unless something recorded still uses one; returns its name."""
    uses = rubric_uses(Rubric.objects.select_for_update().get(pk=rubric.pk))
    if uses:
        raise ValidationError({"rubric": f"'{rubric.name}' is used by {'; '.join(uses)}, so it stays. Stop "
                                         "showing it to annotators or stop using it in new specs instead."})
    name = rubric.name
    rubric.delete()
    return name


def reward_spec_uses(spec: RewardSpec) -> list[str]:
    """Training jobs launched with any version of the spec (their clone and lineage pages link to it)."""
    from webapp.jobs.models import Job

    ids = list(spec.versions.values_list("pk", flat=True))
    jobs = list(Job.objects.filter(project_id=spec.project_id, spec__reward_spec_version_id__in=ids)
                .order_by("pk").values_list("pk", flat=True))
    return [f"{_plural(len(jobs), 'training job')} ({', '.join(f'#{j}' for j in jobs[:5])}"
            f"{', ...' if len(jobs) > 5 else ''})"] if jobs else []


@transaction.atomic
def reward_spec_delete(*, spec: RewardSpec) -> str:
    """Remove a reward spec and all its versions, unless a training job was launched with one."""
    uses = reward_spec_uses(RewardSpec.objects.select_for_update().get(pk=spec.pk))
    if uses:
        raise ValidationError({"reward_spec": f"'{spec.name}' was used by {'; '.join(uses)}, so it stays."})
    name = spec.name
    spec.delete()
    return name


# ---------------------------------------------------------------- serving a spec version

SERVING_WITHDRAWN_FILE = "withdrawn.json"


@transaction.atomic
def reward_spec_serve(*, version: RewardSpecVersion, user):
    """Queue a job that serves ``version`` over HTTP (``python -m rlcore reward serve``) until cancelled.

    The spec is frozen into the job's folder with a fresh bearer token (a file, so ``ps`` never shows it);
    the job runs on the gpu queue when a reward model scores, else on the default one.
    """
    import os
    import secrets
    from pathlib import Path

    from django.conf import settings
    from pydantic import ValidationError as PydanticValidationError
    from rlcore.rewards.check import check_spec
    from rlcore.rewards.spec import RewardSpec as RewardSpecContract
    from rlcore.rewards.spec import model_paths

    from webapp.forms_util import pydantic_errors
    from webapp.jobs.kinds import SERVE_REWARD_KIND, serve_reward_argv
    from webapp.jobs.models import Queue
    from webapp.jobs.services import job_create

    project = version.spec.project
    readers.check_spec_models(project=project, definition=version.definition)
    paths = model_paths(version.definition)
    try:
        contract = RewardSpecContract.model_validate(version.definition)
    except PydanticValidationError as exc:
        raise pydantic_errors(exc.errors(), prefix="reward_spec.") from None
    problems = check_spec(contract)  # without dataset columns: those come with each request
    if problems:
        raise ValidationError({"reward_spec_version": [str(p) for p in problems]})
    queue = Queue.GPU if paths else Queue.DEFAULT
    token = secrets.token_urlsafe(24)
    job = job_create(project=project, user=user, kind=SERVE_REWARD_KIND, argv=[], queue=queue,
                     title=f"Serve {version.spec.name} v{version.number}")
    folder = Path(job.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    spec_path, token_path = folder / "reward_spec.json", folder / "token"
    spec_path.write_text(contract.model_dump_json(indent=2), encoding="utf-8")
    token_path.write_text(token, encoding="utf-8")
    os.chmod(token_path, 0o600)
    job.argv = serve_reward_argv(spec_path=str(spec_path), token_file=str(token_path),
                                 withdrawn_file=str(folder / SERVING_WITHDRAWN_FILE), host=settings.REWARD_SERVE_HOST)
    job.spec = {"reward_spec_version_id": version.pk, "token": token}
    job.save(update_fields=["argv", "spec"])
    return job


def reward_spec_serving_withdraw(*, project, path: str, reason: str) -> int:
    """Tell every running or queued server of ``project`` that scores with the model at ``path`` to refuse
    from now on (the child re-reads its withdrawn file before each request). Returns how many were told."""
    import json
    import os
    from pathlib import Path

    from rlcore.rewards.spec import MODEL_PATH_KINDS
    from webapp.jobs.kinds import SERVE_REWARD_KIND
    from webapp.jobs.models import FINISHED_STATES, Job

    told = 0
    for job in Job.objects.filter(project=project, kind=SERVE_REWARD_KIND).exclude(state__in=FINISHED_STATES):
        if not any(c.get("kind") in MODEL_PATH_KINDS and str(c.get("path")) == path
                   for c in _served_components(job)):
            continue
        target = Path(job.output_dir) / SERVING_WITHDRAWN_FILE
        try:
            current = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            current = {}
        current[path] = reason
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(current), encoding="utf-8")
        os.replace(temporary, target)  # the server never reads half a file
        told += 1
    return told


def _served_components(job) -> list[dict[str, Any]]:
    version = RewardSpecVersion.objects.filter(pk=job.spec.get("reward_spec_version_id")).first()
    return version.definition.get("components", []) if version else []
