from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "webapp.routing"
    label = "routing"

    def ready(self) -> None:
        from webapp.readers import readers
        from webapp.routing.selectors import registry_model_scores, response_scores

        readers.response_scores = response_scores  # the ensemble audit's scores
        readers.registry_model_scores = registry_model_scores  # the spec preview's reward-model components
        from webapp.judging.lm_labels import lm_labelling_finished
        from webapp.routing.services import on_lm_labelling_finished

        lm_labelling_finished.connect(on_lm_labelling_finished, dispatch_uid="routing.lm_labelling_finished")

        from webapp.jobs.services import job_succeeded
        from webapp.routing.embeddings import record_embeddings

        job_succeeded.connect(record_embeddings, dispatch_uid="routing.record_embeddings")

        from webapp.routing.reward_scores import record_reward_scores

        job_succeeded.connect(record_reward_scores, dispatch_uid="routing.record_reward_scores")

        from webapp.routing.tagging import record_prompt_tags

        job_succeeded.connect(record_prompt_tags, dispatch_uid="routing.record_prompt_tags")

        from webapp.jobs.services import job_finished, job_stopped
        from webapp.routing.services import on_planning_job_finished, record_routing_plan

        job_succeeded.connect(record_routing_plan, dispatch_uid="routing.record_routing_plan")
        # job_stopped covers the reaper and a queued cancel too; a plan already failed is left as it is.
        job_finished.connect(on_planning_job_finished, dispatch_uid="routing.on_planning_job_finished")
        job_stopped.connect(on_planning_job_finished, dispatch_uid="routing.on_planning_job_stopped")
