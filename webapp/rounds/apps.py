from django.apps import AppConfig


class RoundsConfig(AppConfig):
    name = "webapp.rounds"
    label = "rounds"

    def ready(self) -> None:
        from webapp.readers import readers
        from webapp.rounds.selectors import overopt_preview_row

        readers.overopt_preview_row = overopt_preview_row  # the rubric preview's pinned sample
        from webapp.jobs.services import job_succeeded
        from webapp.rounds.services import record_overopt_scores

        job_succeeded.connect(record_overopt_scores, dispatch_uid="rounds.record_overopt_scores")
