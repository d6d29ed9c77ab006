from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    name = "webapp.annotation"
    label = "annotation"

    def ready(self) -> None:
        from webapp.annotation import imported_labels as labels
        from webapp.annotation import selectors
        from webapp.datasets.services import dataset_rows_purging, preference_rows_imported, step_rows_imported
        from webapp.readers import readers

        readers.labels_scored_with = selectors.labels_scored_with  # a rubric's removal check
        # the labels in an imported file, written on the rows the datasets app wrote; deleted before them
        preference_rows_imported.connect(labels.preference_labels_import, dispatch_uid="annotation.preference_labels")
        step_rows_imported.connect(labels.step_labels_import, dispatch_uid="annotation.step_labels")
        dataset_rows_purging.connect(labels.imported_rows_purge, dispatch_uid="annotation.imported_rows_purge")
