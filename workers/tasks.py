"""Celery tasks: thin. They hand a job id to the runner and nothing else."""

import logging

from celery import shared_task

logger = logging.getLogger(__name__)


@shared_task(name="jobs.run", acks_late=True, bind=True)
def run_job(self, job_id: int) -> None:
    from workers.runner import execute_job

    execute_job(job_id, worker=self.request.hostname or "")


@shared_task(name="jobs.reap_stale")
def reap_stale_jobs() -> list[int]:
    """Fail running jobs that lost their worker; send again queued jobs whose message the broker lost.
    Routed to the `maintenance` queue (settings.CELERY_TASK_ROUTES), which no long task can fill."""
    from webapp.jobs.services import job_reap_stale, job_resend_lost

    return job_reap_stale() + job_resend_lost(messages_waiting=messages_waiting)


def messages_waiting(queue: str) -> int | None:
    """How many messages the broker holds for ``queue``, not yet taken by a worker; None if it cannot say."""
    from kombu.exceptions import ChannelError

    from workers.celery_app import app

    try:
        with app.connection_for_read() as connection:
            return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
    except ChannelError:  # the broker has no such queue (any more): nothing waits in it
        return 0
    except Exception:
        logger.warning("could not count the messages waiting in queue %s", queue, exc_info=True)
        return None


@shared_task(name="datasets.import", acks_late=True)
def import_dataset(dataset_id: int) -> None:
    from webapp.datasets.services import dataset_import_run

    dataset_import_run(dataset_id=dataset_id)


@shared_task(name="judging.record_lm_labels")
def record_lm_labels() -> int:
    from webapp.judging.lm_labels import lm_runs_reconcile_all

    return lm_runs_reconcile_all()
