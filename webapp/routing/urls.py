from django.urls import path

from webapp.routing import views

urlpatterns = [
    path("", views.routing_home, name="routing_home"),
    path("embeddings/", views.embeddings_compute, name="routing_embeddings"),
    path("reward-scores/", views.reward_scores_compute, name="routing_reward_scores"),
    path("tags/", views.tags_compute, name="routing_tags"),
    path("plans/<int:plan_id>/", views.plan_detail, name="routing_plan"),
    path("plans/<int:plan_id>/approve/", views.plan_approve, name="routing_plan_approve"),
    path("plans/<int:plan_id>/rerun/", views.plan_rerun, name="routing_plan_rerun"),
    path("agreement-by-feature/", views.feature_agreement, name="routing_feature_agreement"),
]
