"""Celery tasks: thin. They hand a job id to the runner and nothing else."""

from celery import shared_task


@shared_task(name="jobs.run", acks_late=True, bind=True)
def run_job(self, job_id: int) -> None:
    from workers.runner import execute_job

    execute_job(job_id, worker=self.request.hostname or "")


@shared_task(name="jobs.reap_stale")
def reap_stale_jobs() -> list[int]:
    from webapp.jobs.services import job_reap_stale

    return job_reap_stale()


@shared_task(name="datasets.import", acks_late=True)
def import_dataset(dataset_id: int) -> None:
    from webapp.datasets.services import dataset_import_run

    dataset_import_run(dataset_id=dataset_id)


@shared_task(name="judging.record_lm_labels")
def record_lm_labels() -> int:
    from webapp.judging.services import lm_runs_reconcile_all

    return lm_runs_reconcile_all()
