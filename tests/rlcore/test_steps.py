"""Steps: splitting keeps spans into the original text; bad splits and stepwise rows are refused
with the row, the field and the count."""

import pytest

from rlcore.steps import (StepError, StepSplit, StepwiseRow, read_stepwise_row, split_steps, steps_from_list,
                          stepwise_row)

TEXT = "Let x = 3.\nStep 1: x + 1 = 4\nso the sum is 4\n\nStep 2: double it: 8\n  \nStep 3: answer 8"


@pytest.mark.parametrize("kind,expected", [
    ("newline", ["Let x = 3.", "Step 1: x + 1 = 4", "so the sum is 4", "Step 2: double it: 8", "Step 3: answer 8"]),
    ("blank_line", ["Let x = 3.\nStep 1: x + 1 = 4\nso the sum is 4", "Step 2: double it: 8", "Step 3: answer 8"]),
    ("step_header", ["Let x = 3.", "Step 1: x + 1 = 4\nso the sum is 4", "Step 2: double it: 8", "Step 3: answer 8"]),
])
def test_it_splits_by_each_builtin_rule_keeping_spans_into_the_original(kind, expected):
    steps = split_steps(TEXT, StepSplit(kind=kind))
    assert [s.text for s in steps] == expected
    assert [s.index for s in steps] == list(range(len(expected)))
    assert all(TEXT[s.start:s.end] == s.text for s in steps)


def test_it_splits_by_a_user_regex_run_with_re2_and_counts_characters_not_bytes():
    text = "é = 1 ⇒ ok ;; ü = 2 ;; done"
    steps = split_steps(text, StepSplit(kind="regex", pattern=r"\s*;;\s*"))
    assert [s.text for s in steps] == ["é = 1 ⇒ ok", "ü = 2", "done"]
    assert all(text[s.start:s.end] == s.text for s in steps)


def test_it_refuses_a_pattern_re2_cannot_run():
    with pytest.raises(ValueError, match="RE2 cannot compile"):
        StepSplit(kind="regex", pattern=r"(a)\1")
    with pytest.raises(ValueError, match="needs a pattern"):
        StepSplit(kind="regex")


def test_it_refuses_a_separator_that_yields_one_step_naming_row_and_field():
    with pytest.raises(StepError, match=r"row 12, field 'response': the blank line separator yields 1 step"):
        split_steps("one paragraph only\nstill it", StepSplit(kind="blank_line"), row=12, field="response")


def test_it_refuses_a_separator_that_yields_thousands_of_steps_with_the_count():
    text = "\n".join(f"t{i}" for i in range(3000))
    with pytest.raises(StepError, match=r"row 2, field 'completion': the regex '\\\\n' separator yields 3000 steps, "
                                        r"more than max_steps=256"):
        split_steps(text, StepSplit(kind="regex", pattern=r"\n"), row=2, field="completion")


def test_it_reads_trl_stepwise_rows_and_writes_them_back_unchanged():
    record = {"prompt": "2*3?", "completions": ["2*3 = 5", " so 5"], "labels": [False, 0 == 1], "id": "r1"}
    row = read_stepwise_row(record, row=1)
    assert row.labels == [False, False] and row.first_error == 0 and row.metadata == {"id": "r1"}
    assert stepwise_row(row) == record
    text, steps = steps_from_list(row.steps)
    assert [text[s.start:s.end] for s in steps] == row.steps


def test_it_reports_the_first_error_or_none():
    assert StepwiseRow("p", ["a", "b", "c"], [True, False, False]).first_error == 1
    assert StepwiseRow("p", ["a", "b"], [True, True]).first_error is None


@pytest.mark.parametrize("record,message", [
    ({"prompt": "p", "completions": ["a", "b"], "labels": [True, True, False]},
     "row 5, field 'labels': 3 labels for 2 steps"),
    ({"prompt": "p", "completions": ["a", ""], "labels": [True, True]}, "row 5, field 'completions': step 2 is empty"),
    ({"prompt": "p", "completions": "a b", "labels": [True]}, "row 5, field 'completions': expected a non-empty list"),
    ({"prompt": "p", "completions": ["a"], "labels": ["good"]}, "row 5, field 'labels': label 1 is 'good'"),
    ({"completions": ["a"]}, "row 5, field 'prompt': expected text"),
])
def test_it_refuses_stepwise_rows_a_prm_cannot_learn_from(record, message):
    with pytest.raises(StepError, match=message.replace("(", r"\(")):
        read_stepwise_row(record, row=5)


@pytest.mark.parametrize("text", [TEXT, "é\r\n\t\nü ⇒ 2\n\n\n  \t \nstep 9) x\n STEP 10. y", "a\nb", "\n\nx\n\ny\n\n"])
def test_the_builtin_rules_split_as_re2_runs_the_same_patterns(text):
    """The builtin patterns run on Python's re for speed; RE2 (what a user's regex runs on) is the reference."""
    import re2

    from rlcore.steps import _BUILTIN, _HEADER, _builtin

    for kind, pattern in _BUILTIN.items():
        rule = StepSplit(kind=kind, min_steps=1)
        as_regex = StepSplit(kind="regex", pattern=pattern, min_steps=1)
        assert split_steps(text, rule) == split_steps(text, as_regex)
    for pattern in (_HEADER, *_BUILTIN.values()):
        assert [m.span() for m in _builtin(pattern).finditer(text)] == [m.span() for m in re2.compile(pattern)
                                                                        .finditer(text)]
