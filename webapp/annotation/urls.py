from django.urls import path

from webapp.annotation import views

urlpatterns = [
    path("annotate/", views.workbench, name="workbench"),
    path("annotate/label/", views.workbench_label, name="workbench_label"),
    path("annotate/skip/", views.workbench_skip, name="workbench_skip"),
    path("annotate/undo/", views.workbench_undo, name="workbench_undo"),
    path("annotate/steps/", views.workbench_steps, name="workbench_steps"),
    path("annotate/steps/label/", views.workbench_step_label, name="workbench_step_label"),
    path("comparisons/", views.comparison_list, name="comparison_list"),
    # the dataset page's form (its URL under datasets/); building comparisons is this app's
    path("datasets/<int:dataset_id>/comparisons/", views.dataset_build_comparisons, name="dataset_build_comparisons"),
    path("agreement/", views.agreement, name="agreement"),
    path("export/", views.export, name="export"),
    path("quality/", views.label_quality, name="label_quality"),
    path("quality/audit/", views.label_audit, name="label_audit"),
    path("quality/gold/", views.gold_mark, name="gold_mark"),
    path("quality/adjudication/", views.adjudication, name="adjudication"),
]
