from django.urls import path

from webapp.jobs import views

urlpatterns = [
    path("", views.job_list, name="job_list"),
    path("compare/", views.job_compare, name="job_compare"),
    path("<int:job_id>/", views.job_detail, name="job_detail"),
    path("<int:job_id>/cancel/", views.job_cancel, name="job_cancel"),
    path("<int:job_id>/files/", views.job_files, name="job_files"),
    path("<int:job_id>/events/", views.job_events, name="job_events"),
    path("<int:job_id>/metrics/", views.job_metrics, name="job_metrics"),
]
