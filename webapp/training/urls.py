from django.urls import path

from webapp.training import views

urlpatterns = [
    path("", views.training_home, name="training_home"),
    path("reward-model/new/", views.reward_model_launch, name="reward_model_launch"),
    path("grpo/new/", views.grpo_launch, name="grpo_launch"),
    path("prm/new/", views.prm_launch, name="prm_launch"),
    path("process-reward-models/<int:model_id>/delete/", views.prm_delete, name="prm_delete"),
    path("jobs/<int:job_id>/resume/", views.job_resume, name="job_resume"),
    path("reward-models/<int:model_id>/delete/", views.reward_model_delete, name="reward_model_delete"),
    path("policies/new/", views.policy_register, name="policy_register"),
    path("policies/<int:policy_id>/delete/", views.policy_delete, name="policy_delete"),
    path("generate/", views.generation_launch, name="generation_launch"),
    path("generate/<int:job_id>/", views.generation_status, name="generation_status"),
    path("generate/<int:job_id>/rerun/", views.generation_rerun, name="generation_rerun"),
]
