"""The viewer's capabilities in a project, for templates that show only the links a role can use."""

from django import template

from webapp.projects.models import Membership
from webapp.projects.permissions import Capability, role_allows

register = template.Library()


@register.simple_tag(takes_context=True)
def project_capabilities(context, project) -> dict[str, bool]:
    """{capability value: allowed} for the signed-in user in ``project`` (all False for a non-member)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    role = None
    if user is not None and user.is_authenticated:
        # order_by(): the model's default ordering would join the user table for nothing.
        role = (Membership.objects.filter(project=project, user=user).order_by()
                .values_list("role", flat=True).first())
    return {c.value: role is not None and role_allows(role, c) for c in Capability}
