"""Datasets in and out: streaming readers with per-row validation for JSONL, CSV, Parquet and
Hugging Face ``save_to_disk`` folders, TRL preference-dataset writers, and TRL stepwise files read as steps
and written back (``stepwise``)."""

from rlcore.datasets.readers import FORMATS, RowError, SourceError, SourceReader, detect_format
from rlcore.datasets.rows import (
    ImportedLabel, ImportedResponse, ImportedRow, check_columns, merge_exported_rows, normalize_record,
    preference_label,
)
from rlcore.datasets.stepwise import (
    STEPWISE_COLUMNS, is_stepwise, read_stepwise, source_is_stepwise, write_stepwise,
)
from rlcore.datasets.trl_export import (
    TIE_POLICIES, ExportLabel, ExportResponse, ExportSummary, preference_rows, write_preferences,
)


def iter_import_rows(reader: SourceReader):
    """Normalised rows (or RowErrors) of a source, exported comparisons merged back together."""

    def normalised():
        checked = False
        for line, record in reader:
            if not checked and reader.columns:  # known once the header (or schema) is read
                check_columns(reader.columns, reader.name)
                checked = True
            if isinstance(record, RowError):
                yield record
                continue
            try:
                yield normalize_record(record, line)
            except RowError as exc:
                yield exc

    return merge_exported_rows(normalised())


__all__ = ["FORMATS", "RowError", "SourceError", "SourceReader", "detect_format", "ImportedLabel",
           "ImportedResponse", "ImportedRow", "merge_exported_rows", "normalize_record", "preference_label", "TIE_POLICIES",
           "ExportLabel", "ExportResponse", "ExportSummary", "preference_rows", "write_preferences", "iter_import_rows", "check_columns",
           "STEPWISE_COLUMNS", "is_stepwise", "read_stepwise", "source_is_stepwise", "write_stepwise"]
