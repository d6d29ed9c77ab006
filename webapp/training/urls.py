from django.urls import path

from webapp.training import views

urlpatterns = [
    path("", views.training_home, name="training_home"),
    path("reward-model/new/", views.reward_model_launch, name="reward_model_launch"),
    path("grpo/new/", views.grpo_launch, name="grpo_launch"),
    path("jobs/<int:job_id>/resume/", views.job_resume, name="job_resume"),
    path("reward-models/<int:model_id>/delete/", views.reward_model_delete, name="reward_model_delete"),
]
