from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery

from webapp.projects.models import Membership, Project


def project_list_for(*, user) -> QuerySet[Project]:
    # The count is a subquery: counted over the `memberships__user=user` join it would always be 1.
    member_count = (Membership.objects.filter(project=OuterRef("pk")).order_by()
                    .values("project").annotate(n=Count("pk")).values("n"))
    return (
        Project.objects.filter(memberships__user=user)
        .annotate(member_count=Subquery(member_count, output_field=IntegerField()))
        .order_by("-created_at")
    )


def member_list(*, project: Project) -> QuerySet[Membership]:
    return Membership.objects.filter(project=project).select_related("user").order_by("user__username")
