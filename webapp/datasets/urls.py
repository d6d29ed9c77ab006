from django.urls import path

from webapp.datasets import views

urlpatterns = [
    path("", views.dataset_list, name="dataset_list"),
    path("<int:dataset_id>/", views.dataset_detail, name="dataset_detail"),
    path("<int:dataset_id>/delete/", views.dataset_delete, name="dataset_delete"),
]
