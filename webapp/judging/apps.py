from django.apps import AppConfig


class JudgingConfig(AppConfig):
    name = "webapp.judging"
    label = "judging"

    def ready(self) -> None:
        from webapp.jobs.services import job_succeeded
        from webapp.judging.services import on_job_succeeded

        job_succeeded.connect(on_job_succeeded, dispatch_uid="judging.record_lm_labels")
