"""The Celery application. Settings come from Django settings (CELERY_* names)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("reward_studio", include=["workers.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
