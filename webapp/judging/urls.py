from django.urls import path

from webapp.judging import views

urlpatterns = [
    path("", views.judge_home, name="judge_home"),
    path("new/", views.judge_config_new, name="judge_config_new"),
    path("rankings/label/", views.judge_label_rankings, name="judge_label_rankings"),
    path("steps/prelabel/", views.judge_prelabel_steps, name="judge_prelabel_steps"),
    path("runs/<int:job_id>/", views.judge_run, name="judge_run"),
    path("<int:config_id>/", views.judge_config_edit, name="judge_config_edit"),
    path("<int:config_id>/test/", views.judge_config_test, name="judge_config_test"),
    path("<int:config_id>/delete/", views.judge_config_delete, name="judge_config_delete"),
    path("templates/new/", views.template_edit, name="judge_template_new"),
    # <path:name>, delete first: a template saved with '/' in its name (before names were checked) must not
    # break the Judges page for everyone, and must stay removable
    path("templates/<path:name>/delete/", views.template_delete, name="judge_template_delete"),
    path("templates/<path:name>/", views.template_edit, name="judge_template_edit"),
]
