from django.db.models import Count, QuerySet

from webapp.projects.models import Membership, Project


def project_list_for(*, user) -> QuerySet[Project]:
    return (
        Project.objects.filter(memberships__user=user)
        .annotate(member_count=Count("memberships", distinct=True))
        .order_by("-created_at")
    )


def member_list(*, project: Project) -> QuerySet[Membership]:
    return Membership.objects.filter(project=project).select_related("user").order_by("user__username")
