"""Writes to projects and memberships. Each raises ValidationError keyed by the field at fault."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q

from webapp.projects.models import Membership, Project, Role

User = get_user_model()


def _check_role(role: str) -> None:
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role '{role}'. Choose one of: {', '.join(Role.values)}."})


@transaction.atomic
def project_create(*, user, name: str, description: str = "", guidelines: str = "") -> Project:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "A project needs a name."})
    if len(name) > 120:
        raise ValidationError({"name": "A project name has at most 120 characters."})
    if Project.objects.filter(name__iexact=name).exists():
        raise ValidationError({"name": f"A project named '{name}' already exists."})
    try:
        # The savepoint keeps the outer transaction usable if a concurrent create won the race.
        with transaction.atomic():
            project = Project.objects.create(
                name=name, description=description, guidelines=guidelines, created_by=user
            )
    except IntegrityError:
        raise ValidationError({"name": f"A project named '{name}' already exists."}) from None
    Membership.objects.create(project=project, user=user, role=Role.OWNER)
    return project


@transaction.atomic
def project_update(*, project: Project, **fields) -> Project:
    if "name" in fields:
        name = (fields["name"] or "").strip()
        if not name:
            raise ValidationError({"name": "A project needs a name."})
        if Project.objects.filter(name__iexact=name).exclude(pk=project.pk).exists():
            raise ValidationError({"name": f"A project named '{name}' already exists."})
        fields["name"] = name
    if "gold_rate" in fields and not 0.0 <= float(fields["gold_rate"] or 0.0) <= 0.5:
        raise ValidationError({"gold_rate": "The gold item rate is a share between 0 and 0.5."})
    for key, value in fields.items():
        setattr(project, key, value)
    project.save()
    return project


def _find_user(identifier: str):
    identifier = (identifier or "").strip()
    user = User.objects.filter(Q(username__iexact=identifier) | Q(email__iexact=identifier)).first() if identifier else None
    if user is None:
        raise ValidationError({"user": f"No user '{identifier}'. Ask them to sign up first, then invite them."})
    return user


@transaction.atomic
def member_add(*, project: Project, user_identifier: str, role: str) -> Membership:
    _check_role(role)
    user = _find_user(user_identifier)
    if Membership.objects.filter(project=project, user=user).exists():
        raise ValidationError({"user": f"{user.username} is already a member of this project."})
    return Membership.objects.create(project=project, user=user, role=role)


def _ensure_an_owner_remains(project: Project, leaving: Membership) -> None:
    # Lock the owner rows so two concurrent demotions cannot both see "another owner remains".
    owners = list(
        Membership.objects.select_for_update().filter(project=project, role=Role.OWNER).values_list("pk", flat=True)
    )
    if leaving.role == Role.OWNER and owners == [leaving.pk]:
        raise ValidationError({"role": "A project needs at least one owner; make someone else owner first."})


@transaction.atomic
def member_change_role(*, membership: Membership, role: str) -> Membership:
    _check_role(role)
    if membership.role == Role.OWNER and role != Role.OWNER:
        _ensure_an_owner_remains(membership.project, membership)
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def member_remove(*, membership: Membership) -> None:
    _ensure_an_owner_remains(membership.project, membership)
    membership.delete()
