"""Streaming readers: one source file (or folder) in, one record (a dict) at a time out.

Memory stays constant whatever the file size: JSONL and CSV are read line by line through a
byte-counting stream (so callers can show progress), Parquet a record batch at a time, and a
Hugging Face ``save_to_disk`` folder through its memory-mapped Arrow table.

Every record comes with its position in the source: the line number for JSONL and CSV (the
line the row starts on), the row number for Parquet and Hugging Face folders, counted from 1.
A record that cannot be read is yielded as a :class:`RowError` instead of a dict, so the
importer can decide whether one bad row fails the whole import or is skipped and reported.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "rows.jsonl")
>>> _ = open(path, "w").write('{"prompt": "hi"}\\n\\nnot json\\n')
>>> [(line, rec if isinstance(rec, dict) else rec.message) for line, rec in SourceReader(path)]
[(1, {'prompt': 'hi'}), (3, 'not valid JSON (Expecting value at column 1)')]
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlcore.errors import UserError

FORMATS = ("jsonl", "csv", "parquet", "hf")
# One JSONL line or CSV row larger than this is reported as a bad row, never loaded into memory.
MAX_LINE_BYTES = 16 * 1024 * 1024
PARQUET_BATCH_ROWS = 2000

_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv",
             ".parquet": "parquet", ".pq": "parquet"}
_MAGIC = [(b"PAR1", "a Parquet file"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "a gzip archive"),
          (b"\x89PNG", "a PNG image"), (b"%PDF", "a PDF document"), (b"\xff\xd8\xff", "a JPEG image")]


class SourceError(UserError):
    """The whole source is unusable: wrong format, unreadable, no header, too large."""


class RowError(UserError):
    """One row is bad; the message says why, `line` says where."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def detect_format(path: str | os.PathLike, declared: str | None = None, name: str | None = None) -> str:
    """The format of a source, from what the user declared, the file name and its first bytes.

    A file whose content contradicts its name (a Parquet file called ``.csv``) is an error that
    says what the file really looks like.
    """
    path = Path(path)
    if declared and declared not in FORMATS:
        raise SourceError(f"unknown format {declared!r}: choose one of {', '.join(FORMATS)}")
    if path.is_dir():
        if not ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()
                or (path / "state.json").exists()):
            raise SourceError(f"{path.name}: a folder must be a Hugging Face dataset saved with "
                              "save_to_disk (it has no dataset_info.json, state.json or dataset_dict.json)")
        if declared and declared != "hf":
            raise SourceError(f"{path.name} is a folder, which only the 'hf' format can read")
        return "hf"
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise SourceError(f"{name or path.name}: the file is empty")
    fmt = declared or _SUFFIXES.get(Path(name or path.name).suffix.lower())
    sniffed = next((what for magic, what in _MAGIC if head.startswith(magic)), None)
    if fmt is None:
        if sniffed == "a Parquet file":
            return "parquet"
        if sniffed:
            raise SourceError(f"{name or path.name} is {sniffed}, not a dataset: upload JSONL, CSV or Parquet")
        fmt = "jsonl" if head.lstrip()[:1] in (b"{", b"[") else "csv"
    if fmt == "parquet" and sniffed != "a Parquet file":
        raise SourceError(f"{name or path.name} is not a Parquet file (it does not start with PAR1)")
    if fmt in ("jsonl", "csv") and sniffed:
        raise SourceError(f"{name or path.name} is {sniffed}, not {fmt.upper()} text"
                          + (": choose the Parquet format" if sniffed == "a Parquet file" else ""))
    return fmt


class _CountingReader(io.RawIOBase):
    """A binary stream that counts the bytes read through it (for progress)."""

    def __init__(self, raw):
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.count += n or 0
        return n


class SourceReader:
    """Iterate ``(position, record_or_RowError)`` over a source; `done` / `total` give progress
    in bytes (JSONL, CSV) or rows (Parquet, HF)."""

    def __init__(self, path: str | os.PathLike, fmt: str | None = None, name: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.name
        self.format = detect_format(self.path, fmt, self.name)
        self.done = 0
        self.total = self.path.stat().st_size if self.format in ("jsonl", "csv") else 0
        self.columns: list[str] = []

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
        for line_no, record in getattr(self, f"_iter_{self.format}")():
            if not isinstance(record, RowError) and (problem := row_value_problem(record)):
                record = RowError(line_no, problem)
            yield line_no, record

    # -- JSON Lines --------------------------------------------------------------------------
    def _iter_jsonl(self):
        with open(self.path, "rb") as f:
            line_no = 0
            while True:
                raw = f.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    break
                line_no += 1
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    while raw and not raw.endswith(b"\n"):  # skip the rest without holding it
                        raw = f.readline(MAX_LINE_BYTES)
                    self.done = f.tell()
                    yield line_no, RowError(line_no, f"line longer than {MAX_LINE_BYTES // 2**20} MB")
                    continue
                self.done = f.tell()
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    yield line_no, RowError(line_no, f"not UTF-8 text (byte {exc.start + 1})")
                    continue
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as exc:
                    yield line_no, RowError(line_no, f"not valid JSON ({exc.msg} at column {exc.colno})")
                    continue
                except RecursionError:
                    yield line_no, RowError(line_no, f"nested more than {MAX_NESTING} levels deep")
                    continue
                if not isinstance(record, dict):
                    yield line_no, RowError(line_no, f"expected a JSON object, got {_json_type(record)}")
                    continue
                yield line_no, record

    # -- CSV ----------------------------------------------------------------------------------
    def _iter_csv(self):
        csv.field_size_limit(MAX_LINE_BYTES)
        with open(self.path, "rb") as raw:
            counting = _CountingReader(raw)
            text = io.TextIOWrapper(io.BufferedReader(counting), encoding="utf-8-sig", newline="")
            dialect = "excel-tab" if self.name.lower().endswith(".tsv") else "excel"
            reader = csv.reader(text, dialect)
            try:
                header = next(reader)
            except StopIteration:
                raise SourceError(f"{self.name}: the file is empty") from None
            except (UnicodeDecodeError, csv.Error) as exc:
                raise SourceError(f"{self.name}: cannot read the CSV header on line 1 ({exc})") from None
            header = [h.strip() for h in header]
            if not any(header):
                raise SourceError(f"{self.name}: line 1 must be a header naming the columns")
            dupes = sorted({h for h in header if header.count(h) > 1})
            if dupes:
                raise SourceError(f"{self.name}: line 1 repeats column(s) {', '.join(dupes)}")
            self.columns = header
            start = reader.line_num + 1
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except UnicodeDecodeError as exc:
                    yield start, RowError(start, f"not UTF-8 text ({exc.reason})")
                    raise SourceError(f"{self.name}: not UTF-8 text near line {start}; "
                                      "save the file as UTF-8") from None
                except csv.Error as exc:
                    yield start, RowError(start, f"malformed CSV ({exc})")
                    start = reader.line_num + 1
                    continue
                self.done = counting.count
                line, start = start, reader.line_num + 1
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != len(header):
                    yield line, RowError(line, f"has {len(row)} fields, the header has {len(header)}")
                    continue
                yield line, dict(zip(header, row))
            self.done = self.total

    # -- Parquet ------------------------------------------------------------------------------
    def _iter_parquet(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{self.name}: not a readable Parquet file ({exc})") from None
        self.total = pf.metadata.num_rows
        self.columns = pf.schema_arrow.names
        row = 0
        try:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                for record in batch.to_pylist():
                    row += 1
                    self.done = row
                    yield row, record
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{self.name}: Parquet data is corrupt after row {row} ({exc})") from None

    # -- Hugging Face datasets folder ---------------------------------------------------------
    def _iter_hf(self):
        try:
            import datasets  # heavy: imported only for this format
        except ImportError:  # pragma: no cover - depends on the install
            raise SourceError("reading a Hugging Face dataset folder needs the 'datasets' package") from None
        try:
            ds = datasets.load_from_disk(str(self.path))
        except Exception as exc:  # noqa: BLE001 - the library raises many kinds
            raise SourceError(f"{self.name}: not a Hugging Face dataset saved with save_to_disk ({exc})") from None
        if isinstance(ds, datasets.DatasetDict):
            if len(ds) != 1 and "train" not in ds:
                raise SourceError(f"{self.name} holds several splits ({', '.join(ds)}) and none is 'train': "
                                  "save one split")
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        self.total = ds.num_rows
        self.columns = list(ds.column_names)
        for index in range(0, ds.num_rows, PARQUET_BATCH_ROWS):
            batch = ds[index:index + PARQUET_BATCH_ROWS]
            keys = list(batch)
            for offset in range(len(batch[keys[0]]) if keys else 0):
                self.done = index + offset + 1
                yield index + offset + 1, {k: batch[k][offset] for k in keys}


# Deeper rows are not data people label; PostgreSQL's jsonb and Python's recursion both fail on thousands of levels.
MAX_NESTING = 64


def row_value_problem(record: dict[str, Any]) -> str | None:
    """What makes a row's values unstorable, naming the field, or None: a NUL character (PostgreSQL refuses
    it in text and jsonb) or nesting deeper than MAX_NESTING.

    >>> row_value_problem({"prompt": "a\\x00b"}), row_value_problem({"m": [[["x"]]]}), row_value_problem({"p": "ok"})
    ("field 'prompt' contains a NUL character (\\\\u0000), which cannot be stored", None, None)
    """
    stack: list[tuple[str, Any, int]] = [(str(k), v, 1) for k, v in record.items()]
    for key in record:
        if "\x00" in str(key):
            return f"column name {key!r} contains a NUL character (\\u0000), which cannot be stored"
    while stack:  # iterative, so that a deep value cannot exhaust the stack here
        at, value, depth = stack.pop()
        if depth > MAX_NESTING:
            return f"field '{at.split('.')[0].split('[')[0]}' is nested more than {MAX_NESTING} levels deep"
        if isinstance(value, str):
            if "\x00" in value:
                return f"field '{at}' contains a NUL character (\\u0000), which cannot be stored"
        elif isinstance(value, dict):
            for key, child in value.items():
                if "\x00" in str(key):
                    return f"field '{at}' has a key with a NUL character (\\u0000), which cannot be stored"
                stack.append((f"{at}.{key}", child, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{at}[{i}]", child, depth + 1) for i, child in enumerate(value))
    return None


def _json_type(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)
