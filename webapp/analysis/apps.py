from django.apps import AppConfig


class AnalysisConfig(AppConfig):
    name = "webapp.analysis"
    label = "analysis"

    def ready(self) -> None:
        from webapp.analysis.services import record_source_job_failure, record_source_scores
        from webapp.jobs.services import job_finished, job_succeeded

        job_succeeded.connect(record_source_scores, dispatch_uid="analysis.record_source_scores")
        job_finished.connect(record_source_job_failure, dispatch_uid="analysis.record_source_job_failure")
