from django.apps import AppConfig


class JudgingConfig(AppConfig):
    name = "webapp.judging"
    label = "judging"

    def ready(self) -> None:
        from webapp.jobs.services import job_finished, job_succeeded
        from webapp.judging.configs import preview_judge, remove_key_file
        from webapp.judging.lm_labels import on_job_succeeded
        from webapp.judging.selectors import judge_config_list, lm_runs_graded_with, preview_judge_list
        from webapp.readers import readers

        # the rubric editor's judged preview and a rubric's removal check
        readers.judge_config_list = judge_config_list
        readers.preview_judge_list = preview_judge_list
        readers.preview_judge = preview_judge
        readers.lm_runs_graded_with = lm_runs_graded_with

        job_succeeded.connect(on_job_succeeded, dispatch_uid="judging.record_lm_labels")
        job_finished.connect(remove_key_file, dispatch_uid="judging.remove_key_file")
