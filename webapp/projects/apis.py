from datetime import datetime

from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status

from webapp.projects import selectors, services
from webapp.projects.models import Membership
from webapp.projects.permissions import Capability, project_for_user

router = Router(tags=["projects"])
User = get_user_model()


class ProjectIn(Schema):
    name: str
    description: str = ""
    guidelines: str = ""


class ProjectPatch(Schema):
    name: str | None = None
    description: str | None = None
    guidelines: str | None = None
    is_closed: bool | None = None


class ProjectOut(Schema):
    id: int
    name: str
    description: str
    guidelines: str
    is_closed: bool
    created_at: datetime
    role: str | None = None


class MemberIn(Schema):
    user: str  # username or e-mail
    role: str


class MemberPatch(Schema):
    role: str


class MemberOut(Schema):
    user_id: int
    username: str
    role: str


def _project_out(project, role=None) -> dict:
    return {**{f: getattr(project, f) for f in ("id", "name", "description", "guidelines", "is_closed", "created_at")},
            "role": role}


def _member_out(membership: Membership) -> dict:
    return {"user_id": membership.user_id, "username": membership.user.username, "role": membership.role}


@router.get("", response=list[ProjectOut], summary="Projects you are a member of")
def list_projects(request):
    roles = dict(Membership.objects.filter(user=request.auth).values_list("project_id", "role"))
    return [_project_out(p, roles.get(p.pk)) for p in selectors.project_list_for(user=request.auth)]


@router.post("", response={201: ProjectOut}, summary="Create a project (you become its owner)")
def create_project(request, body: ProjectIn):
    project = services.project_create(user=request.auth, **body.dict())
    return Status(201, _project_out(project, "owner"))


@router.get("/{project_id}", response=ProjectOut)
def get_project(request, project_id: int):
    project, membership = project_for_user(request.auth, project_id)
    return _project_out(project, membership.role)


@router.patch("/{project_id}", response=ProjectOut, summary="Rename, describe or close a project (owner)")
def update_project(request, project_id: int, body: ProjectPatch):
    project, membership = project_for_user(request.auth, project_id, Capability.MANAGE_MEMBERS)
    project = services.project_update(project=project, **body.dict(exclude_none=True))
    return _project_out(project, membership.role)


@router.get("/{project_id}/members", response=list[MemberOut])
def list_members(request, project_id: int):
    project, _ = project_for_user(request.auth, project_id)
    return [_member_out(m) for m in selectors.member_list(project=project)]


@router.post("/{project_id}/members", response={201: MemberOut}, summary="Invite a user with a role (owner)")
def add_member(request, project_id: int, body: MemberIn):
    project, _ = project_for_user(request.auth, project_id, Capability.MANAGE_MEMBERS)
    membership = services.member_add(project=project, user_identifier=body.user, role=body.role)
    return Status(201, _member_out(membership))


@router.patch("/{project_id}/members/{user_id}", response=MemberOut, summary="Change a member's role (owner)")
def change_member(request, project_id: int, user_id: int, body: MemberPatch):
    project, _ = project_for_user(request.auth, project_id, Capability.MANAGE_MEMBERS)
    membership = get_object_or_404(Membership.objects.select_related("user"), project=project, user_id=user_id)
    return _member_out(services.member_change_role(membership=membership, role=body.role))


@router.delete("/{project_id}/members/{user_id}", response={204: None}, summary="Remove a member (owner)")
def remove_member(request, project_id: int, user_id: int):
    project, _ = project_for_user(request.auth, project_id, Capability.MANAGE_MEMBERS)
    membership = get_object_or_404(Membership, project=project, user_id=user_id)
    services.member_remove(membership=membership)
    return Status(204, None)
