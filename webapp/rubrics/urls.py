from django.urls import path

from webapp.rubrics import views

urlpatterns = [
    path("rubrics/", views.rubric_list, name="rubric_list"),
    path("rubrics/new/", views.rubric_new, name="rubric_new"),
    path("rubrics/check/", views.rubric_check, name="rubric_check"),
    path("rubrics/judge-preview/", views.rubric_judge_preview, name="rubric_judge_preview"),
    path("rubrics/rows/", views.rubric_rows, name="rubric_rows"),
    path("rubrics/<int:rubric_id>/", views.rubric_detail, name="rubric_detail"),
    path("rubrics/<int:rubric_id>/edit/", views.rubric_edit, name="rubric_edit"),
    path("rubrics/<int:rubric_id>/annotation/", views.rubric_annotation, name="rubric_annotation"),
    path("rubrics/<int:rubric_id>/delete/", views.rubric_delete, name="rubric_delete"),
    path("rubrics/<int:rubric_id>/diff/", views.rubric_diff, name="rubric_diff"),
    path("rubrics/<int:rubric_id>/v/<int:number>/", views.rubric_version, name="rubric_version"),
    path("reward-specs/new/", views.spec_new, name="spec_new"),
    path("reward-specs/check/", views.spec_check, name="spec_check"),
    path("reward-specs/add-component/", views.spec_add_component, name="spec_add_component"),
    path("reward-specs/<int:spec_id>/", views.spec_detail, name="spec_detail"),
    path("reward-specs/<int:spec_id>/edit/", views.spec_edit, name="spec_edit"),
    path("reward-specs/<int:spec_id>/delete/", views.spec_delete, name="spec_delete"),
    path("reward-specs/<int:spec_id>/diff/", views.spec_diff, name="spec_diff"),
    path("reward-specs/<int:spec_id>/v/<int:number>/", views.spec_version, name="spec_version"),
    path("reward-specs/<int:spec_id>/v/<int:number>/serve/", views.spec_version_serve, name="spec_version_serve"),
    path("rubrics/<int:thing_id>/v/<int:number>/yaml", views.version_yaml, {"kind": "rubrics"}, name="rubric_yaml"),
    path("reward-specs/<int:thing_id>/v/<int:number>/yaml", views.version_yaml, {"kind": "reward-specs"},
         name="spec_yaml"),
]
