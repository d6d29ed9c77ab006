from django.apps import AppConfig


class JudgingConfig(AppConfig):
    name = "webapp.judging"
    label = "judging"

    def ready(self) -> None:
        from webapp.jobs.services import job_finished, job_succeeded
        from webapp.judging.configs import remove_key_file
        from webapp.judging.lm_labels import on_job_succeeded

        job_succeeded.connect(on_job_succeeded, dispatch_uid="judging.record_lm_labels")
        job_finished.connect(remove_key_file, dispatch_uid="judging.remove_key_file")
