from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    name = "webapp.annotation"
    label = "annotation"

    def ready(self) -> None:
        from webapp.annotation import imports
        from webapp.datasets.services import dataset_rows_purging, preference_rows_imported, step_rows_imported

        preference_rows_imported.connect(imports.preference_labels_import, dispatch_uid="annotation.preference_labels")
        step_rows_imported.connect(imports.step_labels_import, dispatch_uid="annotation.step_labels")
        dataset_rows_purging.connect(imports.imported_rows_purge, dispatch_uid="annotation.imported_rows_purge")
