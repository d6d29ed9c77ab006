from django.apps import AppConfig


class JudgingConfig(AppConfig):
    name = "webapp.judging"
    label = "judging"

    def ready(self) -> None:
        from webapp.jobs.services import job_succeeded
        from webapp.judging.services import on_job_succeeded

        job_succeeded.connect(on_job_succeeded, dispatch_uid="judging.record_lm_labels")

        from webapp.jobs.services import job_finished
        from webapp.judging.services import remove_key_file

        job_finished.connect(remove_key_file, dispatch_uid="judging.remove_key_file")
