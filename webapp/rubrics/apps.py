from django.apps import AppConfig


class RubricsConfig(AppConfig):
    name = "webapp.rubrics"
    label = "rubrics"
    verbose_name = "Rubrics and reward specs"

    def ready(self) -> None:
        from webapp.judging.selectors import annotation_rubric_wanted
        from webapp.rubrics.selectors import annotation_rubric_for

        # A judge's run may also grade on the annotation rubric; judging asks, as it does not import rubrics.
        annotation_rubric_wanted.connect(lambda sender, project, **kwargs: annotation_rubric_for(project),
                                         dispatch_uid="rubrics.annotation_rubric", weak=False)
