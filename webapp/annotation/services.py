"""Writes for annotation: building comparisons, the labelling queue, labels, undo, skip.

The queue's promise, with any number of annotators at once:
- a comparison never holds more human assignments (active or labelled) than its `overlap`;
- an annotator never gets the same comparison twice (a unique constraint, and the claim query
  excludes what they already had);
- an assignment left alone past its timeout goes back to the pool.

All three rest on one rule: `Comparison.taken` only changes under that comparison's row lock.
The claim locks a candidate row with SELECT ... FOR UPDATE SKIP LOCKED (PostgreSQL), so two
annotators never wait on, nor both take, the last slot of one comparison; they each move on to
the next unlocked row.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import timedelta
from itertools import combinations

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from rlcore.datasets.trl_export import ExportSummary
from webapp.annotation.models import (
    STEP_SCALE_VALUES, Assignment, AssignmentStatus, Choice, Comparison, ComparisonKind, LabelSource,
    PreferenceLabel, StepScale,
)
from webapp.datasets.models import Dataset, DatasetStatus, Response
from webapp.projects.models import Project
from webapp.projects.permissions import Capability, project_for_user

BUILD_BATCH = 2000
STRATEGIES = ("all_pairs", "sampled_pairs", "ranking", "head_to_head")
MAX_STRENGTH = 2
TOOL_VERSION = "reward-studio-workbench/1"


class LabelConflict(Exception):
    """The label cannot be taken in the current state (already labelled, expired, closed project).
    The API answers 409 with the message."""


def assignment_timeout() -> timedelta:
    return timedelta(seconds=float(getattr(settings, "ANNOTATION_ASSIGNMENT_TIMEOUT_SECONDS", 900)))


# ------------------------------------------------------------------ building comparisons


def comparisons_build(*, project, dataset: Dataset, strategy: str = "all_pairs", pairs_per_prompt: int = 1,
                      ranking_size: int = 0, overlap: int = 1, seed: int = 0,
                      policies: tuple[int, int] | None = None) -> int:
    """Create comparisons from a ready dataset's responses; returns how many were created.

    - ``all_pairs``: every pair of responses of each prompt;
    - ``sampled_pairs``: ``pairs_per_prompt`` random pairs per prompt (reproducible with ``seed``);
    - ``ranking``: one N-way comparison per prompt with ``ranking_size`` responses (0: all; at least 3);
    - ``head_to_head``: ``policies=(a, b)`` (registry Policy ids): the i-th response of policy a to a prompt
      (by ``sample_index``, then id) against the i-th of policy b, at most ``pairs_per_prompt`` per prompt; a
      prompt one of them did not answer gets none. Response a comes first in the canonical order.
    A comparison that already exists (same prompt, same responses) is not created again.
    """
    errors = {}
    if dataset.project_id != project.pk:
        errors["dataset"] = "That dataset belongs to another project."
    elif dataset.status != DatasetStatus.READY:
        errors["dataset"] = f"Dataset '{dataset.name}' is {dataset.status}, not ready."
    if strategy not in STRATEGIES:
        errors["strategy"] = f"Unknown strategy '{strategy}': choose one of {', '.join(STRATEGIES)}."
    if not 1 <= overlap <= 100:
        errors["overlap"] = "Overlap must be between 1 and 100 annotators."
    if strategy == "head_to_head":
        from webapp.readers import readers

        ids = list(policies or ())
        if len(ids) != 2 or ids[0] == ids[1]:
            errors["policies"] = "Head-to-head needs two different policies of the registry."
        elif len(readers.project_policy_ids(project=project, ids=ids)) != 2:
            errors["policies"] = f"Policies {ids}: not both policies of this project."
        else:
            policies = (int(ids[0]), int(ids[1]))
    if strategy in ("sampled_pairs", "head_to_head") and not 1 <= pairs_per_prompt <= 1000:
        errors["pairs_per_prompt"] = "Pairs per prompt must be between 1 and 1000."
    if strategy == "ranking" and ranking_size and not 3 <= ranking_size <= 26:
        errors["ranking_size"] = "A ranking compares 3 to 26 responses (0 for all of them)."
    if errors:
        raise ValidationError(errors)
    _check_build_size(dataset=dataset, strategy=strategy, pairs_per_prompt=pairs_per_prompt, policies=policies)
    existing = {
        (prompt_id, tuple(sorted(ids)))
        for prompt_id, ids in Comparison.objects.filter(prompt__dataset=dataset).values_list("prompt_id", "response_ids")
    }
    created = 0
    batch: list[Comparison] = []

    def emit(prompt_id: int, ids: list[int]) -> None:
        nonlocal created
        key = (prompt_id, tuple(sorted(ids)))
        if key in existing:
            return
        existing.add(key)
        batch.append(Comparison(project=project, prompt_id=prompt_id, response_ids=list(ids), overlap=overlap,
                                kind=ComparisonKind.PAIR if len(ids) == 2 else ComparisonKind.RANKING))
        if len(batch) >= BUILD_BATCH:
            Comparison.objects.bulk_create(batch)
            created += len(batch)
            batch.clear()

    def per_prompt(prompt_id: int, ids: list[int]) -> None:
        rng = random.Random(f"{seed}:{prompt_id}")
        if strategy == "ranking":
            if len(ids) < 3:
                return
            chosen = sorted(rng.sample(ids, ranking_size)) if ranking_size and len(ids) > ranking_size else ids
            emit(prompt_id, chosen)
            return
        n_pairs = len(ids) * (len(ids) - 1) // 2
        if strategy == "sampled_pairs" and n_pairs > pairs_per_prompt:
            # sampling indices of range(n_pairs) picks what sampling the list of all pairs picks, without the list
            pairs = sorted(_pair_at(ids, i) for i in rng.sample(range(n_pairs), pairs_per_prompt))
        else:
            pairs = combinations(ids, 2)
        for a, b in pairs:
            emit(prompt_id, [a, b])

    if strategy == "head_to_head":
        with transaction.atomic():
            for prompt_id, (a_ids, b_ids) in _policy_responses(dataset=dataset, policies=policies).items():
                for a, b in list(zip(a_ids, b_ids))[:pairs_per_prompt]:
                    emit(prompt_id, [a, b])
            if batch:
                Comparison.objects.bulk_create(batch)
                created += len(batch)
        return created

    with transaction.atomic():
        rows = (Response.objects.filter(prompt__dataset=dataset).order_by("prompt_id", "id")
                .values_list("prompt_id", "id").iterator(chunk_size=5000))
        current, ids = None, []
        for prompt_id, response_id in rows:
            if prompt_id != current:
                if current is not None:
                    per_prompt(current, ids)
                current, ids = prompt_id, []
            ids.append(response_id)
        if current is not None:
            per_prompt(current, ids)
        if batch:
            Comparison.objects.bulk_create(batch)
            created += len(batch)
    return created


def _pair_at(ids: list[int], index: int) -> tuple[int, int]:
    """The ``index``-th pair of ``itertools.combinations(ids, 2)``, found without enumerating the pairs."""
    n = len(ids)
    low, high = 0, n - 2  # the first element: the largest a with a·(2n − a − 1)/2 pairs before it <= index
    while low < high:
        mid = (low + high + 1) // 2
        if mid * (2 * n - mid - 1) // 2 <= index:
            low = mid
        else:
            high = mid - 1
    first = low
    return ids[first], ids[first + 1 + index - first * (2 * n - first - 1) // 2]


def _policy_responses(*, dataset: Dataset, policies: tuple[int, int]) -> dict[int, tuple[list[int], list[int]]]:
    """Per prompt of the dataset, the response ids of policy a and of policy b (by sample index, then id)."""
    found: dict[int, tuple[list[int], list[int]]] = {}
    rows = (Response.objects.filter(prompt__dataset=dataset, policy_id__in=policies)
            .order_by("prompt_id", F("sample_index").asc(nulls_last=True), "id")
            .values_list("prompt_id", "id", "policy_id"))
    for prompt_id, response_id, policy_id in rows.iterator(chunk_size=5000):
        found.setdefault(prompt_id, ([], []))[0 if policy_id == policies[0] else 1].append(response_id)
    return found


def _check_build_size(*, dataset: Dataset, strategy: str, pairs_per_prompt: int,
                      policies: tuple[str, str] | None = None) -> None:
    """Refuse, before any work, a build that would create more comparisons than one request may."""
    from django.db.models import Count

    if strategy == "ranking":
        return  # one comparison per prompt: as many as the dataset has rows
    if strategy == "head_to_head":
        found = _policy_responses(dataset=dataset, policies=policies)
        if not any(a and b for a, b in found.values()):
            raise ValidationError({"policies": (
                f"No prompt of '{dataset}' has responses from both policies {policies[0]} and {policies[1]}: "
                "generate with both on this prompt set first.")})
        total = sum(min(len(a), len(b), pairs_per_prompt) for a, b in found.values())
        if total > settings.COMPARISONS_BUILD_MAX:
            raise ValidationError({"pairs_per_prompt": (
                f"This would build {total:,} comparisons, more than the {settings.COMPARISONS_BUILD_MAX:,} one "
                "build may create: fewer pairs per prompt.")})
        return
    # All pairs of one row grow as n²/2 (600 responses gave 179,700 comparisons and a 10 s request): one
    # build creates at most COMPARISONS_BUILD_MAX; sampled pairs stay available.
    limit = settings.COMPARISONS_BUILD_MAX
    sizes = list(Response.objects.filter(prompt__dataset=dataset).values("prompt_id").annotate(n=Count("id"))
                 .values_list("n", flat=True))
    pairs = [n * (n - 1) // 2 for n in sizes]
    total = sum(pairs) if strategy == "all_pairs" else sum(min(p, pairs_per_prompt) for p in pairs)
    if total > limit:
        raise ValidationError({"strategy": (
            f"This would build {total:,} comparisons, more than the {limit:,} one build may create "
            f"(the largest row has {max(sizes):,} responses). Choose 'sampled pairs' with fewer pairs per prompt, "
            "or a ranking.")})


@transaction.atomic
def comparisons_set_overlap(*, project, overlap: int, comparison_ids: list[int] | None = None) -> int:
    """Change how many annotators each comparison wants, also after labelling started.

    Raising it reopens full comparisons. Lowering it never deletes a label: active assignments
    beyond the new overlap are cancelled (returned as expired) so no new label exceeds it.
    Returns the number of comparisons changed.
    """
    if not 1 <= overlap <= 100:
        raise ValidationError({"overlap": "Overlap must be between 1 and 100 annotators."})
    qs = Comparison.objects.filter(project=project)
    if comparison_ids is not None:
        qs = qs.filter(pk__in=comparison_ids)
    # Lock the rows whose slots we may release, in id order (no deadlock with the queue's claims).
    over = list(qs.filter(taken__gt=overlap).select_for_update().order_by("id").values_list("id", "taken"))
    now = timezone.now()
    for comparison_id, taken in over:
        surplus = taken - overlap
        cancel = list(Assignment.objects.filter(comparison_id=comparison_id, status=AssignmentStatus.ACTIVE)
                      .order_by("-assigned_at").values_list("id", flat=True)[:surplus])
        if cancel:
            Assignment.objects.filter(pk__in=cancel).update(status=AssignmentStatus.EXPIRED, finished_at=now)
            Comparison.objects.filter(pk=comparison_id).update(taken=F("taken") - len(cancel))
    return qs.update(overlap=overlap)


# ------------------------------------------------------------------ the queue


def _check_open(project) -> None:
    if project.is_closed:
        raise LabelConflict(f"Project '{project.name}' is closed: it takes no new labels.")


_last_release: dict[int | None, float] = {}
RELEASE_EVERY_SECONDS = 1.0


def assignments_release_expired(*, project=None, limit: int = 500, throttle: bool = False) -> int:
    """Return abandoned assignments (past their timeout) to the pool; returns how many.

    With `throttle`, a process sweeps a project at most once a second (the queue calls it on
    every request; an item abandoned for the whole timeout can wait one more second).
    """
    key = project.pk if project is not None else None
    if throttle:
        last = _last_release.get(key, 0.0)
        if time.monotonic() - last < min(RELEASE_EVERY_SECONDS, assignment_timeout().total_seconds() / 4):
            return 0
        _last_release[key] = time.monotonic()
    now = timezone.now()
    with transaction.atomic():
        qs = Assignment.objects.filter(status=AssignmentStatus.ACTIVE, expires_at__lte=now)
        if project is not None:
            qs = qs.filter(project=project)
        # skip_locked: an assignment being labelled right now is not expired under the labeller.
        stale = list(qs.select_for_update(skip_locked=True).values_list("id", "comparison_id")[:limit])
        if not stale:
            return 0
        Assignment.objects.filter(pk__in=[a for a, _ in stale]).update(status=AssignmentStatus.EXPIRED,
                                                                         finished_at=now)
        for comparison_id, n in sorted(Counter(c for _, c in stale).items()):
            Comparison.objects.filter(pk=comparison_id).update(taken=F("taken") - n)
    return len(stale)


def assignment_next(*, project, user, steps: bool = False) -> Assignment | None:
    """The annotator's current item: the assignment they hold, or a newly claimed comparison, or None.
    ``steps``: step items only (the workbench's step mode); otherwise never a step item."""
    _check_open(project)
    now = timezone.now()
    kind_q = Q(comparison__kind=ComparisonKind.STEPS) if steps else ~Q(comparison__kind=ComparisonKind.STEPS)
    held = (Assignment.objects.select_related("comparison__prompt")
            .filter(project=project, annotator=user, status=AssignmentStatus.ACTIVE, expires_at__gt=now)
            .filter(kind_q).order_by("-assigned_at").first())
    if held is not None:
        return held
    assignments_release_expired(project=project, throttle=True)
    with transaction.atomic():
        mine = Assignment.objects.filter(comparison=OuterRef("pk"), annotator=user)
        open_items = (Comparison.objects.select_for_update(skip_locked=True, of=("self",)).select_related("prompt")
                      .filter(project=project, is_active=True, taken__lt=F("overlap")).filter(~Exists(mine)))
        open_items = (open_items.filter(kind=ComparisonKind.STEPS) if steps
                      else open_items.exclude(kind=ComparisonKind.STEPS))
        mode = gold_mode(project.gold_rate)
        comparison = None
        if mode != "any":
            kind = open_items.exclude(gold_answer="") if mode == "gold" else open_items.filter(gold_answer="")
            comparison = kind.order_by("id").first()
        if comparison is None:
            comparison = open_items.order_by("id").first()
        if comparison is None:
            return None
        order = list(comparison.response_ids)
        random.shuffle(order)
        try:
            with transaction.atomic():
                assignment = Assignment.objects.create(
                    comparison=comparison, annotator=user, project=project, display_order=order, assigned_at=now,
                    expires_at=now + assignment_timeout())
        except IntegrityError:
            # Two "next" requests of one annotator raced for one comparison; the other one won it.
            return Assignment.objects.filter(comparison=comparison, annotator=user).first()
        Comparison.objects.filter(pk=comparison.pk).update(taken=F("taken") + 1)
    comparison.taken += 1
    assignment.comparison = comparison
    return assignment


def gold_mode(gold_rate: float) -> str:
    """Which kind of comparison this claim takes first: "gold" with probability ``gold_rate``, else "normal";
    "any" when the project mixes in no gold. The claim falls back to any kind when that kind is used up."""
    if not gold_rate:
        return "any"
    return "gold" if random.random() < gold_rate else "normal"


_gold_rates: dict[int, tuple[float, float]] = {}
GOLD_RATE_TTL_SECONDS = 5.0


def _gold_rate_cached(project_id: int) -> float:
    """The project's gold rate, read at most every few seconds per process: the API's "next" otherwise
    needs no query of its own (a changed rate takes effect within GOLD_RATE_TTL_SECONDS)."""
    read_at, rate = _gold_rates.get(project_id, (-GOLD_RATE_TTL_SECONDS, 0.0))
    if time.monotonic() - read_at >= GOLD_RATE_TTL_SECONDS:
        rate = Project.objects.filter(pk=project_id).values_list("gold_rate", flat=True).first() or 0.0
        _gold_rates[project_id] = (time.monotonic(), rate)
    return rate


def _next_item_mixed(*, project_id: int, user_id: int, now, gold_rate: float) -> dict | None:
    from webapp.annotation import fastpath

    mode = gold_mode(gold_rate)
    item = fastpath.next_item(project_id=project_id, user_id=user_id, now=now, expires=now + assignment_timeout(),
                              gold=mode)
    if item is None and mode != "any":  # that kind is used up for this annotator: any other item
        item = fastpath.next_item(project_id=project_id, user_id=user_id, now=now,
                                  expires=now + assignment_timeout())
    return item


def fast_path_enabled() -> bool:
    """PostgreSQL runs the hot paths as single statements (webapp.annotation.fastpath)."""
    return connection.vendor == "postgresql" and getattr(settings, "ANNOTATION_FAST_PATH", True)


def assignment_next_item(*, project, user) -> dict | None:
    """Like assignment_next, but returns the item as shown (selectors.item_for's shape), in one
    statement on PostgreSQL. The API uses it."""
    from webapp.annotation.selectors import item_for

    if not fast_path_enabled():
        assignment = assignment_next(project=project, user=user)
        return item_for(assignment) if assignment is not None else None
    from webapp.annotation import fastpath

    _check_open(project)
    assignments_release_expired(project=project, throttle=True)
    now = timezone.now()
    try:
        return _next_item_mixed(project_id=project.pk, user_id=user.pk, now=now, gold_rate=project.gold_rate)
    except IntegrityError:
        # Two "next" requests of one annotator raced for one comparison; the other one won it.
        return fastpath.held_item(project_id=project.pk, user_id=user.pk, now=now)


def queue_next_item(*, project_id: int, user) -> dict | None:
    """The API's "next item" for a project id: assignment_next_item, with the caller's right to label
    checked inside the queue statement on PostgreSQL (fastpath.MAY_LABEL) instead of by a query of its own.

    When that statement finds nothing (no access, a closed project, or nothing left) the usual path
    runs and says which: Http404 / PermissionDenied / LabelConflict, or None.
    """
    if fast_path_enabled():
        from webapp.annotation import fastpath

        assignments_release_expired(project=Project(pk=project_id), throttle=True)
        now = timezone.now()
        try:
            item = _next_item_mixed(project_id=project_id, user_id=user.pk, now=now,
                                    gold_rate=_gold_rate_cached(project_id))
        except IntegrityError:
            item = None  # a parallel "next" of this annotator won the comparison; the usual path returns it
        if item is not None:
            return item
    project, _ = project_for_user(user, project_id, Capability.LABEL)
    return assignment_next_item(project=project, user=user)


def _locked_assignment(*, project, user, assignment_id: int | None, comparison_id: int | None) -> Assignment:
    if assignment_id is None and comparison_id is None:
        raise ValidationError({"assignment_id": "Give the assignment_id (or comparison_id) you are labelling."})
    qs = Assignment.objects.select_for_update(of=("self",)).select_related("comparison").filter(project=project)
    if assignment_id is not None:
        assignment = qs.filter(pk=assignment_id).first()
    else:
        assignment = qs.filter(comparison_id=comparison_id, annotator=user).first()
    if assignment is None or assignment.annotator_id != user.pk:
        what = f"assignment {assignment_id}" if assignment_id is not None else f"comparison {comparison_id}"
        raise PermissionDenied(f"The {what} is not assigned to you: ask for your next item first.")
    return assignment


def _validate_choice(assignment: Assignment, choice: str, strength: int | None, ranking: list | None):
    comparison = assignment.comparison
    shown = assignment.display_order
    if comparison.kind == ComparisonKind.STEPS:
        raise ValidationError({"choice": "This is a step item: grade its steps (POST .../annotation/steps/labels)."})
    if comparison.kind == ComparisonKind.RANKING:
        if choice not in ("", "ranking", None):
            raise ValidationError({"choice": "This is a ranking: send 'ranking' (response ids, best first)."})
        if not isinstance(ranking, list) or sorted(map(str, ranking)) != sorted(map(str, shown)):
            raise ValidationError({"ranking": "Rank every response of the comparison exactly once "
                                              f"(response ids {', '.join(map(str, shown))}), best first."})
        return Choice.RANKING, [int(r) for r in ranking], 1
    key = (choice or "").strip().upper()
    if key not in ("A", "B", "TIE"):
        raise ValidationError({"choice": "Choose 'A', 'B' (as shown to you) or 'tie'."})
    if key == "TIE":
        return Choice.TIE, None, 0
    strength = 1 if strength is None else strength
    if not isinstance(strength, int) or not 1 <= strength <= MAX_STRENGTH:
        raise ValidationError({"strength": f"Strength is 1 (slightly better) or {MAX_STRENGTH} (much better)."})
    winner = shown[0] if key == "A" else shown[1]
    return (Choice.A if winner == comparison.response_ids[0] else Choice.B), None, strength


def _validate_scores(project, assignment: Assignment, scores: dict | None):
    """Per-criterion scores keyed by displayed letter ('A', 'B', ...) -> stored by response id."""
    if not scores:
        return {}, None
    from webapp.rubrics.selectors import annotation_rubric_for

    version = annotation_rubric_for(project)
    if version is None:
        raise ValidationError({"criterion_scores": "This project has no annotation rubric to score against."})
    criteria = {c["name"]: c for c in version.definition.get("criteria", [])}
    letters = {chr(65 + i): rid for i, rid in enumerate(assignment.display_order)}
    out: dict[str, dict[str, float]] = {}
    if not isinstance(scores, dict):
        raise ValidationError({"criterion_scores": "Send {\"A\": {\"criterion\": score}, \"B\": {...}}."})
    for letter, per in scores.items():
        rid = letters.get(str(letter).upper())
        if rid is None or not isinstance(per, dict):
            raise ValidationError({"criterion_scores": f"'{letter}' is not a response shown to you "
                                                       f"({', '.join(letters)})."})
        for name, value in per.items():
            criterion = criteria.get(name)
            if criterion is None:
                raise ValidationError({"criterion_scores": f"Unknown criterion '{name}': the rubric has "
                                                           f"{', '.join(criteria)}."})
            if value in (None, ""):
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValidationError({"criterion_scores": f"{letter}/{name}: '{value}' is not a number."}) from None
            lo, hi = float(criterion.get("scale_min", 0)), float(criterion.get("scale_max", 1))
            if not lo <= number <= hi:
                raise ValidationError({"criterion_scores": f"{letter}/{name}: {number:g} is outside {lo:g}-{hi:g}."})
            out.setdefault(str(rid), {})[name] = number
    return out, version


def label_submit(*, project, user, choice: str = "", strength: int | None = None, ranking: list | None = None,
                 criterion_scores: dict | None = None, rationale: str = "", assignment_id: int | None = None,
                 comparison_id: int | None = None) -> PreferenceLabel:
    """Record the annotator's label for an item they were assigned; choice is as displayed."""
    _check_open(project)
    _check_rationale(rationale)
    if fast_path_enabled():
        row = _assignment_row(project_id=project.pk, user=user, assignment_id=assignment_id,
                              comparison_id=comparison_id)
        return _label_submit_fast(row, project=project, user=user, choice=choice, strength=strength,
                                  ranking=ranking, criterion_scores=criterion_scores, rationale=rationale,
                                  assignment_id=assignment_id, comparison_id=comparison_id)
    try:
        with transaction.atomic():
            assignment = _locked_assignment(project=project, user=user, assignment_id=assignment_id,
                                            comparison_id=comparison_id)
            if assignment.status == AssignmentStatus.DONE:
                raise LabelConflict(f"You already labelled comparison {assignment.comparison_id}; "
                                    "use undo to change it.")
            if assignment.status != AssignmentStatus.ACTIVE:
                raise LabelConflict(f"Your assignment of comparison {assignment.comparison_id} was "
                                    f"{assignment.status} and returned to the pool; ask for your next item.")
            canonical, ranking_ids, strength = _validate_choice(assignment, choice, strength, ranking)
            scores, rubric_version = _validate_scores(project, assignment, criterion_scores)
            label = PreferenceLabel.objects.create(
                comparison_id=assignment.comparison_id, assignment=assignment, source=LabelSource.HUMAN,
                annotator=user, choice=canonical, ranking=ranking_ids, strength=strength,
                criterion_scores=scores, rationale=(rationale or "").strip(),
                display_order=assignment.display_order, model_version=TOOL_VERSION,
                rubric_version=rubric_version)
            Assignment.objects.filter(pk=assignment.pk).update(status=AssignmentStatus.DONE, finished_at=label.created_at)
            Comparison.objects.filter(pk=assignment.comparison_id).update(
                human_label_count=F("human_label_count") + 1)
    except IntegrityError:
        # The unique constraint is the last line of defence; the status check above comes first.
        raise LabelConflict("You already labelled this comparison.") from None
    return label


def _status_conflict(comparison_id: int, status: str) -> LabelConflict:
    if status == AssignmentStatus.DONE:
        return LabelConflict(f"You already labelled comparison {comparison_id}; use undo to change it.")
    return LabelConflict(f"Your assignment of comparison {comparison_id} was {status} and returned to the pool; "
                         "ask for your next item.")


def queue_label_submit(*, project_id: int, user, criterion_scores: dict | None = None, rationale: str = "",
                       assignment_id: int | None = None, comparison_id: int | None = None,
                       **choice) -> PreferenceLabel:
    """The API's label_submit for a project id: on PostgreSQL the assignment read also checks the
    caller's right to label (fastpath.MAY_LABEL); when it finds nothing, or scores need the project's
    rubric, the usual path runs and gives the exact reason."""
    if fast_path_enabled() and not criterion_scores:
        _check_rationale(rationale)
        row = _assignment_row(project_id=project_id, user=user, assignment_id=assignment_id,
                              comparison_id=comparison_id)
        if row is not None:
            return _label_submit_fast(row, project=None, user=user, criterion_scores=None, rationale=rationale,
                                      assignment_id=assignment_id, comparison_id=comparison_id, **choice)
    project, _ = project_for_user(user, project_id, Capability.LABEL)
    return label_submit(project=project, user=user, criterion_scores=criterion_scores, rationale=rationale,
                        assignment_id=assignment_id, comparison_id=comparison_id, **choice)


def _check_rationale(rationale: str | None) -> None:
    if len(rationale or "") > 10_000:
        raise ValidationError({"rationale": "Keep the rationale under 10,000 characters."})


def _assignment_row(*, project_id: int, user, assignment_id: int | None, comparison_id: int | None) -> dict | None:
    from webapp.annotation import fastpath

    if assignment_id is None and comparison_id is None:
        raise ValidationError({"assignment_id": "Give the assignment_id (or comparison_id) you are labelling."})
    return fastpath.assignment_row(project_id=project_id, assignment_id=assignment_id, comparison_id=comparison_id,
                                   user_id=user.pk)


def _label_submit_fast(row: dict | None, *, project, user, choice, strength, ranking, criterion_scores, rationale,
                       assignment_id, comparison_id) -> PreferenceLabel:
    """label_submit on PostgreSQL, given the assignment's row: validate, then one conditional write.
    ``project`` is needed only for criterion scores (its rubric)."""
    from types import SimpleNamespace

    from webapp.annotation import fastpath

    if row is None or row["annotator_id"] != user.pk:
        what = f"assignment {assignment_id}" if assignment_id is not None else f"comparison {comparison_id}"
        raise PermissionDenied(f"The {what} is not assigned to you: ask for your next item first.")
    if row["status"] != AssignmentStatus.ACTIVE:
        raise _status_conflict(row["comparison_id"], row["status"])
    view = SimpleNamespace(display_order=row["display_order"],
                           comparison=SimpleNamespace(kind=row["kind"], response_ids=row["response_ids"]))
    canonical, ranking_ids, strength = _validate_choice(view, choice, strength, ranking)
    scores, rubric_version = _validate_scores(project, view, criterion_scores)
    now = timezone.now()
    try:
        label_id = fastpath.insert_label(
            assignment_id=row["id"], user_id=user.pk, choice=canonical, ranking=ranking_ids, strength=strength,
            scores=scores, rationale=(rationale or "").strip(), model_version=TOOL_VERSION,
            rubric_version_id=rubric_version.pk if rubric_version else None, now=now)
    except IntegrityError:
        raise LabelConflict(f"You already labelled comparison {row['comparison_id']}.") from None
    if label_id is None:  # expired, skipped or labelled between the read and the write
        status = Assignment.objects.filter(pk=row["id"]).values_list("status", flat=True).first() or "expired"
        raise _status_conflict(row["comparison_id"], status)
    return PreferenceLabel(
        pk=label_id, comparison_id=row["comparison_id"], assignment_id=row["id"], source=LabelSource.HUMAN,
        annotator=user, choice=canonical, ranking=ranking_ids, strength=strength, criterion_scores=scores,
        rationale=(rationale or "").strip(), display_order=row["display_order"], model_version=TOOL_VERSION,
        rubric_version=rubric_version, created_at=now)


@transaction.atomic
def assignment_skip(*, project, user, assignment_id: int | None = None, comparison_id: int | None = None) -> None:
    """Give an item back unlabelled: it returns to the pool for others, never to this annotator."""
    _check_open(project)
    assignment = _locked_assignment(project=project, user=user, assignment_id=assignment_id,
                                    comparison_id=comparison_id)
    if assignment.status != AssignmentStatus.ACTIVE:
        raise LabelConflict(f"Comparison {assignment.comparison_id} is {assignment.status}, not yours to skip.")
    Assignment.objects.filter(pk=assignment.pk).update(status=AssignmentStatus.SKIPPED, finished_at=timezone.now())
    Comparison.objects.filter(pk=assignment.comparison_id).update(taken=F("taken") - 1)


@transaction.atomic
def label_undo_last(*, project, user) -> Assignment:
    """Withdraw the annotator's most recent label; its item becomes their current item again."""
    _check_open(project)
    label = (PreferenceLabel.objects.select_for_update(of=("self",))
             .filter(comparison__project=project, annotator=user, source=LabelSource.HUMAN,
                     assignment__isnull=False).order_by("-id").first())
    if label is None:
        raise LabelConflict("You have no label in this project to undo.")
    assignment = Assignment.objects.select_for_update().select_related("comparison__prompt").get(pk=label.assignment_id)
    label.delete()
    now = timezone.now()
    assignment.status = AssignmentStatus.ACTIVE
    assignment.assigned_at = now
    assignment.expires_at = now + assignment_timeout()
    assignment.finished_at = None
    assignment.save(update_fields=["status", "assigned_at", "expires_at", "finished_at"])
    Comparison.objects.filter(pk=assignment.comparison_id).update(human_label_count=F("human_label_count") - 1)
    return assignment


def lm_label_create(*, comparison: Comparison, choice: str, strength: int = 1, ranking: list | None = None,
                    model_version: str, provenance: dict, rationale: str = "", rubric_version=None,
                    criterion_scores: dict | None = None) -> PreferenceLabel:
    """An LM judge's label (the routing issue writes these). `choice` is canonical: a / b / tie / ranking."""
    if comparison.project.is_closed:
        raise LabelConflict(f"Project '{comparison.project.name}' is closed: it takes no new labels.")
    if choice not in Choice.values:
        raise ValidationError({"choice": f"Choose one of {', '.join(Choice.values)}."})
    return PreferenceLabel.objects.create(
        comparison=comparison, source=LabelSource.LM, annotator=None, choice=choice, ranking=ranking,
        strength=0 if choice == Choice.TIE else strength, model_version=model_version, provenance=provenance,
        rationale=rationale, rubric_version=rubric_version, criterion_scores=criterion_scores or {},
        display_order=list(comparison.response_ids))


# ------------------------------------------------------------------ export

EXPORT_FORMATS = ("jsonl", "parquet")


MARGINS = ("strength", "ensemble")


def _ensemble_margins(rows, margins: dict[str, float], summary):
    """Each row's margin replaced by the audit's adaptive margin (the ensemble's mean reward difference,
    chosen minus rejected) of its label; rows the audit did not score (ties, rankings, adjudications)
    keep their margin and are counted, so the file says what it rests on."""
    for row in rows:
        mu = margins.get(row["label_id"])
        if mu is None:
            summary.rows_without_ensemble_score += 1
        else:
            row["margin"] = mu
        yield row


def labels_export(*, project, fmt: str = "jsonl", conversational: bool = False, tie_policy: str = "drop",
                  source: str | None = None, dataset_id: int | None = None, margin: str = "strength",
                  ensemble_job_id: int | None = None):
    """Write the project's labels as a TRL preference dataset; returns (path, ExportSummary): labels in,
    rows written, and the labels that gave no row, by reason. ``margin="ensemble"`` writes the ensemble
    audit's adaptive margin of job ``ensemble_job_id`` instead of the strength (see _ensemble_margins)."""
    from pathlib import Path

    from rlcore.datasets import TIE_POLICIES, preference_rows, write_preferences
    from webapp.annotation.selectors import ensemble_audit, export_labels

    errors = {}
    margin = margin or "strength"
    if margin not in MARGINS:
        errors["margin"] = f"Unknown margin '{margin}': choose strength or ensemble."
    elif margin == "ensemble" and not ensemble_job_id:
        errors["ensemble_job_id"] = "An ensemble margin needs the ensemble's job (ensemble_job_id)."
    if fmt not in EXPORT_FORMATS:
        errors["format"] = f"Unknown format '{fmt}': choose jsonl or parquet."
    if tie_policy not in TIE_POLICIES:
        errors["tie_policy"] = f"Unknown tie policy '{tie_policy}': choose one of {', '.join(TIE_POLICIES)}."
    if source not in (None, "", *LabelSource.values):
        errors["source"] = "Source is 'human', 'lm' or empty (both)."
    if errors:
        raise ValidationError(errors)
    folder = Path(settings.ARTIFACT_ROOT) / "exports" / f"project-{project.pk}"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S-%f")
    path = folder / f"preferences-{stamp}{'-chat' if conversational else ''}.{fmt}"
    audit = None
    if margin == "ensemble":
        audit, _ = ensemble_audit(project=project, job_id=ensemble_job_id)  # refuses a missing score first
    summary = ExportSummary() if audit is None else EnsembleMarginSummary(ensemble_job_id=ensemble_job_id,
                                                                          n_members=audit.n_members)
    rows = preference_rows(export_labels(project=project, source=source or None, dataset_id=dataset_id),
                           tie_policy=tie_policy, conversational=conversational, summary=summary)
    if audit is not None:
        rows = _ensemble_margins(rows, {p.pair_id: p.adaptive_margin for p in audit.pairs}, summary)
    write_preferences(rows, path, fmt)
    return path, summary


class EnsembleMarginSummary(ExportSummary):
    """An export whose margins are an ensemble's: which one, and the rows it gave no score."""

    margin: str = "ensemble"
    ensemble_job_id: int
    n_members: int
    rows_without_ensemble_score: int = 0


EXPORT_READ_BYTES = 1 << 16


def export_download(path, summary, *, asynchronous: bool, content_type: str | None = None):
    """The export file as an attachment, with the counts it rests on as headers.

    ``asynchronous`` (the request came through ASGI, as under uvicorn): the file is read through an async
    iterator. Django serves a FileResponse's sync iterator under ASGI by reading it into a list first, so
    the whole file sat in the web worker (a 64 MB export grew it by 59 MB)."""
    import asyncio

    from django.http import FileResponse

    file = open(path, "rb")
    response = FileResponse(file, as_attachment=True, filename=path.name, content_type=content_type,
                            headers=export_summary_headers(summary))
    if asynchronous:
        async def chunks():
            while chunk := await asyncio.to_thread(file.read, EXPORT_READ_BYTES):
                yield chunk

        # Content-Length and Content-Disposition are set from the file already; the response still closes it.
        response.streaming_content = chunks()
    return response


def export_summary_headers(summary) -> dict[str, str]:
    """The counts an export rests on, as response headers (a download has no page to show them on)."""
    import json

    return {"X-Labels-In": str(summary.labels_in), "X-Rows-Out": str(summary.rows_out),
            "X-Labels-Dropped": json.dumps(summary.labels_dropped, sort_keys=True),
            "X-Tie-Rows": str(summary.tie_rows), "X-Tie-Policy": summary.tie_policy,
            **({"X-Margin": f"ensemble job {summary.ensemble_job_id} ({summary.n_members} members)",
                "X-Rows-Without-Ensemble-Score": str(summary.rows_without_ensemble_score)}
               if isinstance(summary, EnsembleMarginSummary) else {"X-Margin": "strength"})}


# ------------------------------------------------------------------ label quality: gold items, adjudication


def gold_set(*, project, comparison_ids: list[int], answer: str) -> int:
    """Make comparisons gold items with a known canonical answer ("a" or "b"; "" makes them normal again).

    A gold item is wanted by every annotator who may label, so its overlap is raised to their number (it
    never lowers one). Returns how many comparisons changed."""
    from webapp.projects.models import Membership
    from webapp.projects.permissions import ROLE_CAPABILITIES

    answer = (answer or "").strip().lower()
    if answer == "tie":
        raise ValidationError({"answer": "A gold answer cannot be a tie: a tie gold item cannot tell a careful "
                                         "annotator from one who says tie when unsure. Give 'a' or 'b'."})
    if answer not in ("a", "b", ""):
        raise ValidationError({"answer": f"'{answer}' is not a gold answer: give 'a' (the first canonical "
                                         "response) or 'b', or '' to make the items normal again."})
    comparisons = Comparison.objects.filter(project=project, pk__in=comparison_ids or [])
    found = set(comparisons.values_list("pk", flat=True))
    missing = sorted(set(comparison_ids or []) - found)
    if missing or not comparison_ids:
        raise ValidationError({"comparison_ids": f"No comparison {missing[0]} in this project." if missing
                               else "Give the comparison ids to mark."})
    if answer and comparisons.exclude(kind=ComparisonKind.PAIR).exists():
        raise ValidationError({"comparison_ids": "Only pairs (A / B) can be gold items."})
    labellers = Membership.objects.filter(project=project, role__in=[
        role for role, caps in ROLE_CAPABILITIES.items() if Capability.LABEL in caps]).count()
    with transaction.atomic():
        changed = comparisons.update(gold_answer=answer)
        if answer:
            comparisons.filter(overlap__lt=min(max(labellers, 1), 100)).update(overlap=min(max(labellers, 1), 100))
    return changed


@transaction.atomic
def adjudication_request(*, project, comparison_ids: list[int]) -> dict:
    """Send comparisons back to the queue for one more, different, annotator: each one's overlap becomes
    its taken slots + 1 (raised for these comparisons only). The queue never gives a comparison to anyone
    who had it before, so the original annotators do not get it back. Returns the counts it touched."""
    rows = list(Comparison.objects.select_for_update().filter(project=project, pk__in=comparison_ids or [])
                .order_by("id").values_list("id", "taken", "overlap"))
    if not rows:
        raise ValidationError({"comparison_ids": "None of these comparisons is in this project."})
    raised = 0
    for comparison_id, taken, overlap in rows:
        wanted = min(taken + 1, 100)
        if wanted > overlap:
            Comparison.objects.filter(pk=comparison_id).update(overlap=wanted, is_active=True)
            raised += 1
    labels = PreferenceLabel.objects.filter(comparison_id__in=[r[0] for r in rows]).exclude(
        source=LabelSource.ADJUDICATION).count()
    return {"comparisons": len(rows), "overlap_raised": raised, "labels": labels}


def adjudication_send(*, project, comparison_ids: list[int], confirm: bool) -> dict:
    """adjudication_request, or (confirm=False) only its counts: the preview runs the same service in a
    transaction that is rolled back, so what it says is exactly what the action would do."""
    with transaction.atomic():
        counts = adjudication_request(project=project, comparison_ids=comparison_ids)
        if not confirm:
            transaction.set_rollback(True)
    return {**counts, "done": confirm}


AUDIT_FLAGS = ("probably_wrong", "ambiguous")


def audit_send(*, project, ensemble_job_id: int, z: float = 1.0, t: float = 0.0,
               flags: list[str] | tuple[str, ...] = AUDIT_FLAGS, confirm: bool = False) -> dict:
    """Send the ensemble audit's flagged comparisons to adjudication (confirm=False: the counts only).
    Returns the preview (flags, labels, comparisons, comparison_ids), overlap_raised and done."""
    from webapp.annotation.selectors import audit_preview, ensemble_audit

    if not flags or set(flags) - set(AUDIT_FLAGS):
        raise ValidationError({"flags": "Flags are 'probably_wrong' and/or 'ambiguous'."})
    result, comparison_of = ensemble_audit(project=project, job_id=ensemble_job_id, z=z, t=t)
    preview = audit_preview(result, comparison_of, flags=tuple(flags))
    if not preview["comparisons"]:
        return {**preview, "overlap_raised": 0, "done": confirm}
    sent = adjudication_send(project=project, comparison_ids=preview["comparison_ids"], confirm=confirm)
    return {**preview, "overlap_raised": sent["overlap_raised"], "done": confirm}


def adjudication_record(*, project, user, comparison_id: int, choice: str, strength: int = 1,
                        rationale: str = "") -> PreferenceLabel:
    """Record a disagreement's resolution as a label of its own kind (source "adjudication"); a newer
    resolution of the same comparison replaces the older one. ``choice`` is canonical: a, b or tie."""
    _check_open(project)
    _check_rationale(rationale)
    comparison = Comparison.objects.filter(project=project, pk=comparison_id).first()
    if comparison is None:
        raise ValidationError({"comparison_id": f"No comparison {comparison_id} in this project."})
    if comparison.kind != ComparisonKind.PAIR:
        raise ValidationError({"comparison_id": "Only pairs (A / B) are adjudicated here."})
    choice = (choice or "").strip().lower()
    if choice not in (Choice.A, Choice.B, Choice.TIE):
        raise ValidationError({"choice": "Choose 'a', 'b' (canonical order) or 'tie'."})
    if choice != Choice.TIE and strength not in (1, 2):
        raise ValidationError({"strength": "Strength is 1 (slightly better) or 2 (much better)."})
    with transaction.atomic():
        PreferenceLabel.objects.filter(comparison=comparison, source=LabelSource.ADJUDICATION).delete()
        return PreferenceLabel.objects.create(
            comparison=comparison, source=LabelSource.ADJUDICATION, annotator=user, choice=choice,
            strength=0 if choice == Choice.TIE else strength, rationale=(rationale or "").strip(),
            display_order=list(comparison.response_ids), model_version=TOOL_VERSION)


# ------------------------------------------------------------------ step items (issue 13)
# A step item is a Comparison of kind "steps" over one response and one stored split of it; it rides the
# same queue (the same row locks, `taken <= overlap`, one assignment per annotator, expiry), and its labels
# are StepLabels: a grade per step and the first wrong step.

STEP_GRADE_WORDS = {"good": 1, "neutral": 0, "bad": -1}
MAX_NOTE = 10_000


def step_items_build(*, project, dataset: Dataset, overlap: int = 1, scale: str = StepScale.TERNARY) -> int:
    """One step item per response of the dataset, on its current (latest) split; a split that already has
    an item is not given another. Returns how many were created."""
    from django.db.models import Max

    from webapp.datasets.models import StepSplit

    errors = {}
    if dataset.project_id != project.pk:
        errors["dataset"] = "That dataset belongs to another project."
    elif dataset.status != DatasetStatus.READY:
        errors["dataset"] = f"Dataset '{dataset.name}' is {dataset.status}, not ready."
    if not 1 <= overlap <= 100:
        errors["overlap"] = "Overlap must be between 1 and 100 annotators."
    if scale not in StepScale.values:
        errors["scale"] = f"Unknown scale '{scale}': choose {' or '.join(StepScale.values)}."
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        latest = (StepSplit.objects.filter(response__prompt__dataset=dataset).values("response_id")
                  .annotate(v=Max("version")))
        splits = list(StepSplit.objects.filter(response__prompt__dataset=dataset)
                      .filter(Exists(latest.filter(response_id=OuterRef("response_id"), v=OuterRef("version"))))
                      .values_list("id", "response_id", "response__prompt_id"))
        if not splits:
            raise ValidationError({"dataset": f"Dataset '{dataset.name}' has no steps: split its responses into "
                                              "steps first (or import a TRL stepwise file)."})
        have = set(Comparison.objects.filter(project=project, kind=ComparisonKind.STEPS,
                                             step_split_id__in=[s[0] for s in splits])
                   .values_list("step_split_id", flat=True))
        made = Comparison.objects.bulk_create([
            Comparison(project=project, prompt_id=prompt_id, kind=ComparisonKind.STEPS, response_ids=[response_id],
                       overlap=overlap, step_split_id=split_id, step_scale=scale)
            for split_id, response_id, prompt_id in splits if split_id not in have], batch_size=BUILD_BATCH)
    return len(made)


def _step_details(comparison_id: int) -> dict:
    """The steps, scale and current LM suggestion of a step item (added to the queue's item on the ORM path;
    fastpath.STEP_COLUMNS reads the same fields on PostgreSQL)."""
    from webapp.annotation.models import StepLabel, StepLabelSource

    split_id, scale, steps = (Comparison.objects.filter(pk=comparison_id)
                              .values_list("step_split_id", "step_scale", "step_split__steps").get())
    suggestion = (StepLabel.objects.filter(comparison_id=comparison_id, source=StepLabelSource.LM)
                  .order_by("-id").values("id", "grades", "first_error", "model_version").first())
    return {"step_split_id": split_id, "scale": scale,
            "steps": [{"index": i, **s} for i, s in enumerate(steps or [])], "suggestion": suggestion}


def step_item_next(*, project_id: int, user) -> dict | None:
    """The annotator's held step item, or a newly claimed one (the queue's guarantees), with its steps;
    None when none is left for them."""
    from webapp.annotation import fastpath
    from webapp.annotation.selectors import item_for

    item = None
    if fast_path_enabled():
        assignments_release_expired(project=Project(pk=project_id), throttle=True)
        now = timezone.now()
        try:
            item = fastpath.next_item(project_id=project_id, user_id=user.pk, now=now,
                                      expires=now + assignment_timeout(), steps=True)
        except IntegrityError:
            item = fastpath.held_item(project_id=project_id, user_id=user.pk, now=now, steps=True)
    if item is None:  # no access, a closed project, nothing left, or another database: the usual path says which
        project, _ = project_for_user(user, project_id, Capability.LABEL)
        assignment = assignment_next(project=project, user=user, steps=True)
        if assignment is None:
            return None
        item = item_for(assignment)
        item.update(_step_details(item["comparison_id"]))
    return item  # the fast path's statement read the steps and the suggestion with the item


def _step_grades(grades, *, scale: str, n_steps: int, field: str = "grades") -> list[int]:
    values = STEP_SCALE_VALUES[scale]
    if not isinstance(grades, list) or len(grades) != n_steps:
        got = f"{len(grades)} grade{'s' if len(grades) != 1 else ''}" if isinstance(grades, list) else "no list"
        raise ValidationError({field: f"Grade every step: {got} for {n_steps} steps."})
    out = []
    for i, grade in enumerate(grades):
        if scale == StepScale.TERNARY and isinstance(grade, str):
            grade = STEP_GRADE_WORDS.get(grade.strip().lower(), grade)
        if isinstance(grade, bool) or not isinstance(grade, int) or grade not in values:
            allowed = "good / neutral / bad (1 / 0 / -1)" if scale == StepScale.TERNARY else "1 to 5"
            raise ValidationError({field: f"Step {i + 1}: {grade!r} is not a grade; use {allowed}."})
        out.append(grade)
    return out


def _first_error(first_error, grades: list[int], scale: str) -> int | None:
    """The first wrong step: as given, or (ternary) the first step graded bad. A given one must not come
    after a step graded bad, nor be a step graded good."""
    bad = [i for i, g in enumerate(grades) if scale == StepScale.TERNARY and g == -1]
    if first_error is None:
        return bad[0] if bad else None
    if isinstance(first_error, bool) or not isinstance(first_error, int) or not 0 <= first_error < len(grades):
        raise ValidationError({"first_error": f"The first wrong step is a step index from 0 to {len(grades) - 1} "
                                              "(or null: no step is wrong)."})
    if bad and bad[0] < first_error:
        raise ValidationError({"first_error": f"Step {bad[0] + 1} is graded bad, so the first wrong step cannot "
                                              f"be step {first_error + 1}."})
    if scale == StepScale.TERNARY and grades[first_error] == 1:
        raise ValidationError({"first_error": f"Step {first_error + 1} is graded good; the first wrong step "
                                              "cannot be a good one."})
    return first_error


def step_label_submit(*, project_id: int, user, grades, assignment_id: int | None = None,
                      comparison_id: int | None = None, first_error: int | None = None, note: str = "",
                      suggestion_id: int | None = None):
    """Record an annotator's grades of their assigned step item. ``suggestion_id``: the LM pre-label they
    were shown (then the label is of kind "reviewed", with the steps they changed counted)."""
    from webapp.annotation.models import StepLabel, StepLabelSource

    if len(note or "") > MAX_NOTE:
        raise ValidationError({"note": "Keep the note under 10,000 characters."})
    if fast_path_enabled() and (assignment_id is not None or comparison_id is not None):
        label = _step_label_submit_fast(project_id=project_id, user=user, grades=grades, assignment_id=assignment_id,
                                        comparison_id=comparison_id, first_error=first_error, note=note,
                                        suggestion_id=suggestion_id)
        if label is not None:
            return label
    project, _ = project_for_user(user, project_id, Capability.LABEL)
    _check_open(project)
    try:
        with transaction.atomic():
            assignment = _locked_assignment(project=project, user=user, assignment_id=assignment_id,
                                            comparison_id=comparison_id)
            comparison = assignment.comparison
            if comparison.kind != ComparisonKind.STEPS:
                raise ValidationError({"assignment_id": f"Comparison {comparison.pk} is a {comparison.kind}, not a "
                                                        "step item: label it with .../annotation/labels."})
            if assignment.status != AssignmentStatus.ACTIVE:
                raise _status_conflict(comparison.pk, assignment.status)
            steps = Comparison.objects.filter(pk=comparison.pk).values_list("step_split__steps", flat=True).get()
            scale = comparison.step_scale or StepScale.TERNARY
            grades = _step_grades(grades, scale=scale, n_steps=len(steps))
            first = _first_error(first_error, grades, scale)
            suggestion = None
            if suggestion_id is not None:
                suggestion = StepLabel.objects.filter(pk=suggestion_id, comparison=comparison,
                                                      source=StepLabelSource.LM).first()
                if suggestion is None:
                    raise ValidationError({"suggestion_id": f"No LM pre-label {suggestion_id} on this item."})
            label = StepLabel.objects.create(
                comparison=comparison, assignment=assignment, step_split_id=comparison.step_split_id,
                source=StepLabelSource.REVIEWED if suggestion else StepLabelSource.HUMAN, annotator=user,
                scale=scale, grades=grades, first_error=first, note=(note or "").strip(), suggestion=suggestion,
                changed_steps=(sum(a != b for a, b in zip(grades, suggestion.grades)) if suggestion else None),
                model_version=TOOL_VERSION)
            Assignment.objects.filter(pk=assignment.pk).update(status=AssignmentStatus.DONE,
                                                                finished_at=label.created_at)
            Comparison.objects.filter(pk=comparison.pk).update(human_label_count=F("human_label_count") + 1)
    except IntegrityError:
        raise LabelConflict(f"You already labelled comparison {assignment.comparison_id}.") from None
    return label


def _step_label_submit_fast(*, project_id: int, user, grades, assignment_id, comparison_id, first_error, note,
                            suggestion_id):
    """step_label_submit on PostgreSQL: one read (fastpath.STEP_ASSIGNMENT_SQL), the same validation, one
    conditional write. None: not the plain case (not the caller's active step item, no such suggestion, or the
    assignment changed before the write); the ORM path then runs and says exactly why."""
    from webapp.annotation import fastpath
    from webapp.annotation.models import StepLabel, StepLabelSource

    row = fastpath.step_assignment_row(project_id=project_id, assignment_id=assignment_id,
                                       comparison_id=comparison_id, user_id=user.pk, suggestion_id=suggestion_id)
    if (row is None or row["annotator_id"] != user.pk or row["kind"] != ComparisonKind.STEPS
            or row["status"] != AssignmentStatus.ACTIVE
            or (suggestion_id is not None and row["suggestion_grades"] is None)):
        return None
    scale = row["scale"] or StepScale.TERNARY
    grades = _step_grades(grades, scale=scale, n_steps=row["n_steps"] or 0)
    first = _first_error(first_error, grades, scale)
    suggested = row["suggestion_grades"]
    source = StepLabelSource.REVIEWED if suggestion_id is not None else StepLabelSource.HUMAN
    changed = sum(a != b for a, b in zip(grades, suggested)) if suggestion_id is not None else None
    now = timezone.now()
    try:
        label_id = fastpath.insert_step_label(
            assignment_id=row["id"], user_id=user.pk, split_id=row["step_split_id"], source=source, scale=scale,
            grades=grades, first_error=first, note=(note or "").strip(), suggestion_id=suggestion_id,
            changed=changed, model_version=TOOL_VERSION, now=now)
    except IntegrityError:
        raise LabelConflict(f"You already labelled comparison {row['comparison_id']}.") from None
    if label_id is None:
        return None
    return StepLabel(pk=label_id, comparison_id=row["comparison_id"], assignment_id=row["id"],
                     step_split_id=row["step_split_id"], source=source, annotator=user, scale=scale, grades=grades,
                     first_error=first, note=(note or "").strip(), suggestion_id=suggestion_id,
                     changed_steps=changed, model_version=TOOL_VERSION, created_at=now)


def step_lm_label_create(*, comparison: Comparison, grades, first_error: int | None = None, model_version: str,
                         provenance: dict | None = None, judge_template=None, note: str = ""):
    """An LM judge's grades of a step item: a pre-label, shown to annotators as a suggestion."""
    from webapp.annotation.models import StepLabel, StepLabelSource

    if comparison.kind != ComparisonKind.STEPS:
        raise ValidationError({"comparison_id": f"Comparison {comparison.pk} is not a step item."})
    if comparison.project.is_closed:
        raise LabelConflict(f"Project '{comparison.project.name}' is closed: it takes no new labels.")
    steps = comparison.step_split.steps
    scale = comparison.step_scale or StepScale.TERNARY
    grades = _step_grades(grades, scale=scale, n_steps=len(steps))
    return StepLabel.objects.create(
        comparison=comparison, step_split_id=comparison.step_split_id, source=StepLabelSource.LM, scale=scale,
        grades=grades, first_error=_first_error(first_error, grades, scale), model_version=model_version[:200],
        provenance=provenance or {}, judge_template=judge_template, note=note)


def step_labels_export(*, project) -> tuple:
    """The project's step labels (people's and LM pre-labels) as TRL stepwise rows (JSONL): ``prompt``,
    ``completions`` (the steps), ``labels`` (a step is good unless graded bad: ternary -1, score5 1-2).
    The grades, scale, first wrong step, kind, rater and note ride along as columns, so
    datasets.services.stepwise_import reads the file back without loss. Returns (path, counts)."""
    from pathlib import Path

    from rlcore.datasets import write_stepwise
    from rlcore.steps import StepwiseRow
    from webapp.annotation.models import StepLabel

    folder = Path(settings.ARTIFACT_ROOT) / "exports" / f"project-{project.pk}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"steps-{timezone.now().strftime('%Y%m%d-%H%M%S-%f')}.jsonl"
    labels = (StepLabel.objects.filter(comparison__project=project).select_related("step_split", "comparison__prompt",
                                                                                  "annotator").order_by("id"))

    def rows():
        for label in labels.iterator(chunk_size=1000):
            good = [g != -1 if label.scale == StepScale.TERNARY else g >= 3 for g in label.grades]
            yield StepwiseRow(prompt=label.comparison.prompt.text, steps=[s["text"] for s in label.step_split.steps],
                              labels=good, metadata={
                                  "step_grades": label.grades, "scale": label.scale, "first_error": label.first_error,
                                  "source": label.source, "rater": (label.annotator.username if label.annotator
                                                                    else label.model_version),
                                  "note": label.note, "label_id": label.pk, "response_id": label.step_split.response_id,
                                  "split_version": label.step_split.version})

    n = write_stepwise(rows(), path)
    return path, {"labels_in": n, "rows_out": n}
