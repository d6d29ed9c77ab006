"""Who may do what in a project: the one table every page and API endpoint consults.

A user who is not a member of a project gets 404 for it and everything in it (we do not confirm
that it exists); a member whose role lacks the capability gets 403.
"""

from __future__ import annotations

from enum import Enum

from django.core.exceptions import PermissionDenied
from django.http import Http404

from webapp.projects.models import Membership, Project, Role


class Capability(str, Enum):
    VIEW = "view"                       # see the project and its members
    VIEW_DASHBOARDS = "view_dashboards"  # jobs, metrics, agreement, exports
    LABEL = "label"                     # annotate comparisons
    DESIGN = "design"                   # datasets, rubrics, reward specs, launching jobs
    MANAGE_MEMBERS = "manage_members"   # invite, change roles, remove; edit/close the project


ROLE_CAPABILITIES: dict[str, frozenset[Capability]] = {
    Role.OWNER: frozenset(Capability),
    Role.DESIGNER: frozenset({Capability.VIEW, Capability.VIEW_DASHBOARDS, Capability.LABEL, Capability.DESIGN}),
    Role.ANNOTATOR: frozenset({Capability.VIEW, Capability.LABEL}),
    Role.VIEWER: frozenset({Capability.VIEW, Capability.VIEW_DASHBOARDS}),
}


# What a capability lets a person do, in the words a refusal page uses ("Annotating needs ...").
CAPABILITY_WORDS: dict[Capability, str] = {
    Capability.VIEW: "Seeing this project",
    Capability.VIEW_DASHBOARDS: "Seeing jobs, metrics, agreement and exports",
    Capability.LABEL: "Annotating comparisons",
    Capability.DESIGN: "Changing datasets, rubrics, reward specs, judges and jobs",
    Capability.MANAGE_MEMBERS: "Managing members and project settings",
}


def role_allows(role: str, capability: Capability) -> bool:
    return capability in ROLE_CAPABILITIES.get(role, frozenset())


def roles_allowed(capability: Capability) -> list[str]:
    """The roles that have a capability, most powerful first (the order of Role)."""
    return [role.value for role in Role if capability in ROLE_CAPABILITIES[role]]


class RoleRequired(PermissionDenied):
    """A member whose role lacks a capability. Carries the project so the refusal page can show its
    navigation, and says which roles would do (the API returns the same sentence as JSON)."""

    def __init__(self, *, project: Project, role: str, capability: Capability):
        self.project, self.role, self.capability = project, role, capability
        self.roles_needed = roles_allowed(capability)
        needed = ", ".join(self.roles_needed[:-1]) + f" or {self.roles_needed[-1]}" \
            if len(self.roles_needed) > 1 else self.roles_needed[0]
        super().__init__(f"{CAPABILITY_WORDS[capability]} needs the {needed} role; "
                         f"your role in {project.name} is {role}.")


def project_for_user(user, project_id: int, capability: Capability = Capability.VIEW) -> tuple[Project, Membership]:
    """The project and the user's membership, or Http404 / PermissionDenied."""
    if not user.is_authenticated:
        raise Http404("No such project")
    try:
        # get(), not first(): first() would sort by the model's ordering (a join on the user table).
        membership = Membership.objects.select_related("project").get(project_id=project_id, user=user)
    except Membership.DoesNotExist:
        raise Http404("No such project") from None
    if not role_allows(membership.role, capability):
        raise RoleRequired(project=membership.project, role=membership.role, capability=capability)
    return membership.project, membership
