from django.urls import path

from webapp.analysis import views

urlpatterns = [
    path("", views.analysis_home, name="analysis_home"),
    path("comparisons/<int:comparison_id>/", views.comparison_detail, name="analysis_comparison"),
    path("comparisons/<int:comparison_id>/drill/", views.comparison_drill, name="analysis_drill"),
]
