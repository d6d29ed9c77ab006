"""Logging filters named in settings.LOGGING: keep the logs readable at INFO."""

from __future__ import annotations

import logging


def no_traceback_for_client_errors(record: logging.LogRecord) -> bool:
    """django.request logs every 403 with the PermissionDenied's traceback; a refusal is not a fault,
    so its one line is kept and the traceback dropped. 5xx keep theirs."""
    if getattr(record, "status_code", 500) < 500:
        record.exc_info = None
        record.exc_text = None
    return True


class QuietPeriodicTasks(logging.Filter):
    """Drop celery's INFO lines ("Sending due task", "received", "succeeded") for the beat schedule's
    own bookkeeping tasks, which run every few seconds and would bury the job lines. Their failures
    (ERROR) still show, and LOG_LEVEL=DEBUG shows everything."""

    def __init__(self, name: str = ""):
        super().__init__(name)
        self._tasks: frozenset[str] | None = None

    def _periodic_tasks(self) -> frozenset[str]:
        if self._tasks is None:
            from django.conf import settings

            self._tasks = frozenset(entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values())
        return self._tasks

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return True
        # celery.app.trace / celery.worker.strategy pass a dict with the task name; celery.beat a tuple.
        args = record.args
        names = [args.get("name")] if isinstance(args, dict) else list(args or ())
        return not any(name in self._periodic_tasks() for name in names if isinstance(name, str))
