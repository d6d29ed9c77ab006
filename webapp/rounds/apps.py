from django.apps import AppConfig


class RoundsConfig(AppConfig):
    name = "webapp.rounds"
    label = "rounds"

    def ready(self) -> None:
        from webapp.jobs.services import job_succeeded
        from webapp.rounds.services import record_overopt_scores

        job_succeeded.connect(record_overopt_scores, dispatch_uid="rounds.record_overopt_scores")
