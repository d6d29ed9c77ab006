"""rlcore.datasets: streaming readers, row shapes and errors, TRL export and its round trip."""

import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlcore.datasets import (
    ExportLabel, ExportResponse, RowError, SourceError, SourceReader, iter_import_rows, normalize_record,
    preference_rows, write_preferences,
)
from rlcore.datasets import readers


def test_it_reads_jsonl_in_constant_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        for i in range(50_000):
            f.write(json.dumps({"prompt": f"prompt {i} " + "x" * 100, "responses": ["a", "b"]}) + "\n")
    reader = SourceReader(path)
    tracemalloc.start()
    n = sum(1 for _ in iter_import_rows(reader))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 50_000 and reader.done == reader.total == path.stat().st_size
    assert peak < 5 * 2**20  # the file is ~7 MB; rows are never all held


def test_it_reports_an_overlong_line_without_loading_it(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "long.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": "' + "x" * 5000 + '"}\n{"prompt": "after"}\n')
    out = list(SourceReader(path))
    assert out[0] == (1, {"prompt": "ok"})
    assert isinstance(out[1][1], RowError) and out[1][1].message == "line longer than 0 MB" and out[1][0] == 2
    assert out[2] == (3, {"prompt": "after"})


def test_it_numbers_csv_rows_by_their_first_line(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text('prompt,response\n"two\nlines",a\nthree,b,extra\nfour,c\n')
    out = list(SourceReader(path))
    assert out[0] == (2, {"prompt": "two\nlines", "response": "a"})
    assert out[1][0] == 4 and out[1][1].message == "has 3 fields, the header has 2"
    assert out[2] == (5, {"prompt": "four", "response": "c"})


def test_it_reads_parquet_in_batches_with_row_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 3)
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": f"p{i}"} for i in range(7)]), path, row_group_size=2)
    reader = SourceReader(path)
    out = list(reader)
    assert [line for line, _ in out] == list(range(1, 8)) and out[6][1] == {"prompt": "p6"}
    assert (reader.done, reader.total) == (7, 7)


def test_it_reads_a_hugging_face_folder_and_a_single_split_dict(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"prompt": "a"}, {"prompt": "b"}])
    ds.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dict"))
    assert [r for _, r in SourceReader(tmp_path / "one")] == [{"prompt": "a"}, {"prompt": "b"}]
    assert [n for n, _ in SourceReader(tmp_path / "dict")] == [1, 2]
    (tmp_path / "plain").mkdir()
    with pytest.raises(SourceError, match="save_to_disk"):
        SourceReader(tmp_path / "plain")


def test_it_takes_the_implicit_prompt_of_trl_conversations():
    row = normalize_record({"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                            "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "No"}]},
                           line=4)
    assert row.prompt_messages == [{"role": "user", "content": "Hi"}]
    assert [r.text for r in row.responses] == ["Hello", "No"]


@pytest.mark.parametrize("record,message", [
    ({"messages": [{"role": "robot", "content": "x"}]}, "message 1 has role 'robot'"),
    ({"messages": "hello"}, "'messages' must be a list of chat messages, got str"),
    ({"prompt": "p", "responses": "one"}, "'responses' must be a list, got str"),
    ({"prompt": "p", "responses": [{"model": "m"}]}, "response 1 is an object without 'text' or 'content'"),
    ({"prompt": None}, "'prompt' is missing (empty or null)"),
    ({"chosen": "a", "rejected": "b"}, "'chosen'/'rejected' rows need a 'prompt' column"),
])
def test_it_names_what_is_wrong_with_a_row(record, message):
    with pytest.raises(RowError) as exc:
        normalize_record(record, line=9)
    assert exc.value.line == 9 and message in exc.value.message


def _labels():
    responses = [ExportResponse(text="r0"), ExportResponse(text="r1"), ExportResponse(text="r2")]
    return [
        ExportLabel(label_id="1", comparison_id="10", prompt_text="p", responses=responses[:2], choice="b", strength=2,
                    annotator="carol", display_order=[1, 0], labeled_at="t1", rationale="why"),
        ExportLabel(label_id="2", comparison_id="10", prompt_text="p", responses=responses[:2], choice="tie",
                    source="lm", model_version="judge-1", display_order=[0, 1], provenance={"confidence": 0.6}),
        ExportLabel(label_id="3", comparison_id="11", prompt_text="q", responses=responses, choice="ranking",
                    ranking=[2, 0, 1], annotator="bob", display_order=[2, 1, 0]),
    ]


def test_it_expands_rankings_and_applies_tie_policies():
    rows = list(preference_rows(_labels(), tie_policy="split"))
    assert [(r["chosen"], r["rejected"], r["margin"]) for r in rows] == [
        ("r1", "r0", 2.0), ("r0", "r1", 0.0), ("r1", "r0", 0.0), ("r2", "r0", 1.0), ("r2", "r1", 2.0), ("r0", "r1", 1.0)]
    assert len(list(preference_rows(_labels(), tie_policy="drop"))) == 4


def test_it_marks_a_kept_tie_as_a_tie_not_a_win_and_counts_what_it_dropped():
    from rlcore.datasets import ExportSummary

    summary = ExportSummary()
    rows = list(preference_rows(_labels(), tie_policy="keep", summary=summary))
    assert [r["tie"] for r in rows] == [False, True, False, False, False]
    assert summary.model_dump() == {"tie_policy": "keep", "labels_in": 3, "labels_kept": 3, "labels_dropped": {},
                                    "rows_out": 5, "tie_rows": 1}
    summary = ExportSummary()
    assert len(list(preference_rows(_labels(), tie_policy="drop", summary=summary))) == 4
    assert summary.labels_dropped == {"tie (tie policy 'drop')": 1} and summary.rows_out == 4
    summary = ExportSummary()
    rows = list(preference_rows(_labels(), tie_policy="split", summary=summary))
    assert [r["tie"] for r in rows][1:3] == [True, True] and summary.tie_rows == 2


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_it_round_trips_every_label_through_a_file(tmp_path, fmt):
    path = tmp_path / f"out.{fmt}"
    assert write_preferences(preference_rows(_labels(), tie_policy="keep", conversational=True), path, fmt) == 5
    rows = list(iter_import_rows(SourceReader(path)))
    assert len(rows) == 2  # two comparisons, merged back
    first, second = rows
    assert [r.text for r in first.responses] == ["r0", "r1"] and [r.text for r in second.responses] == ["r0", "r1", "r2"]
    got = {(lab.label_id, lab.choice, lab.strength, lab.source, lab.annotator, tuple(lab.display_order),
            tuple(lab.ranking or ()), lab.rationale, lab.model_version) for lab in first.labels + second.labels}
    assert got == {("1", "b", 2, "human", "carol", (1, 0), (), "why", ""),
                   ("2", "tie", 1, "lm", "", (0, 1), (), "", "judge-1"),
                   ("3", "ranking", 1, "human", "bob", (2, 1, 0), (2, 0, 1), "", "")}
    assert first.labels[1].provenance == {"confidence": 0.6}


def test_a_csv_cell_of_deeply_nested_json_is_a_row_error_not_a_crash(tmp_path):
    path = tmp_path / "deep.csv"
    deep = "[" * 5000 + "]" * 5000
    path.write_text(f'prompt,responses\nok,"[""a"", ""b""]"\ndeep,"{deep}"\n')
    (line_ok, ok), (line_deep, deep_record) = list(SourceReader(path))
    assert [r.text for r in normalize_record(ok, line_ok).responses] == ["a", "b"]
    with pytest.raises(RowError) as caught:
        normalize_record(deep_record, line_deep)
    assert caught.value.line == 3 and "'responses' must be a list" in caught.value.message


def test_it_reads_stepwise_rows_from_parquet_and_writes_them_back_as_trl_jsonl(tmp_path):
    """pyarrow writes the Parquet file (an independent writer); the JSONL written back is TRL's shape."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rlcore.datasets import is_stepwise, read_stepwise, write_stepwise
    from rlcore.steps import StepError

    pq.write_table(pa.table({"prompt": ["p1", "p2"], "completions": [["a", "b"], ["c", "d", "e"]],
                             "labels": [[True, False], [True, True, True]], "rater": ["x", "y"]}),
                   tmp_path / "steps.parquet")
    rows = list(read_stepwise(tmp_path / "steps.parquet"))
    assert [(line, r.prompt, r.steps, r.labels, r.metadata) for line, r in rows] == [
        (1, "p1", ["a", "b"], [True, False], {"rater": "x"}), (2, "p2", ["c", "d", "e"], [True, True, True],
                                                                 {"rater": "y"})]
    assert write_stepwise((r for _, r in rows), tmp_path / "out.jsonl") == 2
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert records[0] == {"prompt": "p1", "completions": ["a", "b"], "labels": [True, False], "rater": "x"}
    assert all(is_stepwise(r) for r in records) and not is_stepwise({"prompt": "p", "chosen": "a", "rejected": "b"})
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "completions": ["a"]}\nnot json\n')
    with pytest.raises(StepError, match="row 2: not valid JSON"):
        list(read_stepwise(tmp_path / "bad.jsonl"))
