"""Rubrics and reward specs, each a named thing in a project with a list of immutable versions.

A version's ``definition`` is the JSON dump of the rlcore contract (``rlcore.rubric.Rubric`` or
``rlcore.rewards.RewardSpec``): one definition per idea, validated by rlcore before it is saved.
Labels, jobs and scores point at a *version*, so what they used never changes under them.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower

from webapp.projects.models import Project


class ImmutableVersionError(RuntimeError):
    """A saved version was about to be changed; save a new version instead."""


class _Version(models.Model):
    number = models.PositiveIntegerField()
    definition = models.JSONField(help_text="the rlcore contract, as model_dump(mode='json')")
    note = models.CharField(max_length=500, blank=True, help_text="what changed, in the author's words")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        # Versions are history: labels, jobs and scores refer to them. A change is a new version.
        if self.pk is not None:
            raise ImmutableVersionError(f"{type(self).__name__} {self.pk} is immutable; save a new version")
        super().save(*args, **kwargs)


class Rubric(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rubrics")
    name = models.CharField(max_length=120)
    use_for_annotation = models.BooleanField(
        default=False, help_text="annotators see this rubric's latest version (one rubric per project)"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint("project", Lower("name"), name="rubric_name_unique_ci"),
            models.UniqueConstraint(fields=["project"], condition=Q(use_for_annotation=True),
                                    name="one_annotation_rubric_per_project"),
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RubricVersion(_Version):
    rubric = models.ForeignKey(Rubric, on_delete=models.CASCADE, related_name="versions")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rubric", "number"], name="rubric_version_unique")]
        ordering = ["rubric_id", "-number"]

    def __str__(self) -> str:
        return f"{self.rubric.name} v{self.number}"


class RewardSpec(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="reward_specs")
    name = models.CharField(max_length=120)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint("project", Lower("name"), name="reward_spec_name_unique_ci")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RewardSpecVersion(_Version):
    spec = models.ForeignKey(RewardSpec, on_delete=models.CASCADE, related_name="versions")
    rubric_versions = models.ManyToManyField(
        RubricVersion, blank=True, related_name="reward_spec_versions",
        help_text="the rubric versions inlined into this spec's rubric components",
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["spec", "number"], name="reward_spec_version_unique")]
        ordering = ["spec_id", "-number"]

    def __str__(self) -> str:
        return f"{self.spec.name} v{self.number}"
