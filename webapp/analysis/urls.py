from django.urls import path

from webapp.analysis import views

urlpatterns = [
    path("", views.analysis_home, name="analysis_home"),
    path("comparisons/<int:comparison_id>/", views.comparison_detail, name="analysis_comparison"),
    path("comparisons/<int:comparison_id>/drill/", views.comparison_drill, name="analysis_drill"),
    path("reward-models/<int:reward_model_id>/", views.reward_model_evaluation, name="analysis_rm_evaluation"),
]
