from django.http import JsonResponse
from django.urls import include, path

from webapp.api.api import api


def healthz(request):
    return JsonResponse({"ok": True})


# Role refusals render inside the layout, with the project's navigation and the role they need.
handler403 = "webapp.projects.views.permission_denied"

urlpatterns = [
    path("accounts/", include("webapp.accounts.urls")),
    path("api/v1/", api.urls),
    path("healthz", healthz),
    path("", include("webapp.projects.urls")),
    path("projects/<int:project_id>/", include("webapp.rubrics.urls")),
    path("projects/<int:project_id>/training/", include("webapp.training.urls")),
    path("projects/<int:project_id>/datasets/", include("webapp.datasets.urls")),
    path("projects/<int:project_id>/", include("webapp.annotation.urls")),
    path("projects/<int:project_id>/judging/", include("webapp.judging.urls")),
    path("projects/<int:project_id>/routing/", include("webapp.routing.urls")),
    path("projects/<int:project_id>/analysis/", include("webapp.analysis.urls")),
    path("projects/<int:project_id>/rounds/", include("webapp.rounds.urls")),
]
