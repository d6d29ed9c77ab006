from django.db.models import QuerySet

from webapp.training.models import RewardModel


def reward_model_list(*, project, include_deleted: bool = False) -> QuerySet[RewardModel]:
    models = RewardModel.objects.filter(project=project).select_related("job")
    return models if include_deleted else models.filter(deleted_at__isnull=True)
