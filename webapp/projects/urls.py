from django.urls import include, path

from webapp.projects import views

urlpatterns = [
    path("", views.project_list, name="project_list"),
    path("projects/<int:project_id>/", views.project_detail, name="project_detail"),
    path("projects/<int:project_id>/members/", views.project_members, name="project_members"),
    path("projects/<int:project_id>/settings/", views.project_settings, name="project_settings"),
    path("projects/<int:project_id>/members/<int:user_id>/", views.member_update, name="member_update"),
    path("projects/<int:project_id>/jobs/", include("webapp.jobs.urls")),
]
