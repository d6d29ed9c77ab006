"""TRL stepwise-supervision files in and out: the dataset readers (JSONL, CSV, Parquet, HF folders) yield
records, :func:`rlcore.steps.read_stepwise_row` reads each as steps, and :func:`write_stepwise` writes rows
back as JSONL with :func:`rlcore.steps.stepwise_row`. One reading of the format for the webapp's import, the
CLI and training snapshots.

>>> import tempfile, os
>>> from rlcore.steps import StepwiseRow
>>> path = os.path.join(tempfile.mkdtemp(), "steps.jsonl")
>>> write_stepwise([StepwiseRow("1+1?", ["1+1=2", "so 2"], [True, True], {"rater": "ann"})], path)
1
>>> [(line, row.steps, row.labels, row.metadata) for line, row in read_stepwise(path)]
[(1, ['1+1=2', 'so 2'], [True, True], {'rater': 'ann'})]
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator

from rlcore.datasets.readers import RowError, SourceReader
from rlcore.steps import StepError, StepwiseRow, read_stepwise_row, stepwise_row

#: The columns that make a file a TRL stepwise one (``labels`` is optional: an unlabelled file).
STEPWISE_COLUMNS = ("prompt", "completions")


def is_stepwise(record: dict) -> bool:
    """Whether a record is a TRL stepwise row (``completions`` a list of steps), not a preference row."""
    return all(c in record for c in STEPWISE_COLUMNS) and isinstance(record.get("completions"), list)


def source_is_stepwise(path: str | os.PathLike, fmt: str | None = None, name: str | None = None) -> bool:
    """Whether a source's first readable record is a TRL stepwise row (only that record is read)."""
    for _, record in SourceReader(path, fmt, name):
        if not isinstance(record, RowError):
            return is_stepwise(record)
    return False


def read_stepwise(path: str | os.PathLike, fmt: str | None = None, name: str | None = None
                  ) -> Iterator[tuple[int, StepwiseRow]]:
    """``(line or row number, StepwiseRow)`` of every row of a source; the first bad row raises a
    :class:`~rlcore.steps.StepError` naming its row and field (a stepwise import is all or nothing)."""
    for line, record in SourceReader(path, fmt, name):
        if isinstance(record, RowError):
            raise StepError(f"row {line}: {record.message}")
        yield line, read_stepwise_row(record, row=line)


def write_stepwise(rows: Iterable[StepwiseRow], path: str | os.PathLike) -> int:
    """Write ``rows`` as TRL stepwise JSONL (``prompt``, ``completions``, ``labels``, then the metadata
    columns); returns how many were written."""
    n = 0
    with open(path, "w") as out:
        for row in rows:
            out.write(json.dumps(stepwise_row(row)) + "\n")
            n += 1
    return n
