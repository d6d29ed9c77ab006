from django.urls import path

from webapp.rounds import views

urlpatterns = [
    path("", views.round_list, name="round_list"),
    path("<int:number>/", views.round_detail, name="round_detail"),
    path("overoptimization/<int:report_id>/", views.overopt_detail, name="overopt_detail"),
    path("runs/<int:run_id>/overoptimization/", views.run_overopt, name="run_overopt"),
]
