from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "webapp.training"
    label = "training"

    def ready(self) -> None:
        from webapp.readers import readers
        from webapp.training import selectors

        from webapp.training.model_locations import check_spec_models

        # the head-to-head build's policies, the ensemble audit's members, the spec composer's registry
        readers.project_policy_ids = selectors.project_policy_ids
        readers.ensemble_members = selectors.ensemble_members
        readers.ensembles = selectors.ensembles
        readers.reward_model_list = selectors.reward_model_list
        readers.prm_list = selectors.prm_list
        readers.check_spec_models = check_spec_models
        from webapp.jobs.services import job_succeeded
        from webapp.training.services import register_trained_models, register_trained_policies

        job_succeeded.connect(register_trained_models, dispatch_uid="training.register_trained_models")
        job_succeeded.connect(register_trained_policies, dispatch_uid="training.register_trained_policies")
        from webapp.training.services import register_trained_prms

        job_succeeded.connect(register_trained_prms, dispatch_uid="training.register_trained_prms")
        from webapp.jobs.services import job_stopped
        from webapp.training.services import generation_record

        # inside the finishing transaction, whatever the final state: a finished job always has its version
        job_succeeded.connect(generation_record, dispatch_uid="training.generation_record")
        job_stopped.connect(generation_record, dispatch_uid="training.generation_record_stopped")
