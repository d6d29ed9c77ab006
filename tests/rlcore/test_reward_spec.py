"""RewardSpec validation at save time and YAML/JSON files: each problem names the component and field."""

import json

import pytest

from rlcore.errors import UserError
from rlcore.rewards import RewardSpec, check_spec, load_spec, save_spec, validate_spec


def spec_with(*components, **extra) -> RewardSpec:
    return RewardSpec(name="s", components=list(components), **extra)


def problems(spec, columns=None):
    return [(p.where, p.field) for p in check_spec(spec, columns)]


def test_it_accepts_a_sound_spec():
    spec = spec_with({"kind": "verifier", "name": "v", "reference_column": "answer"},
                     {"kind": "length_penalty", "name": "len", "max_length": 10, "cache_length": 5, "weight": 0.2})
    assert check_spec(spec, ["prompt", "answer"]) == []
    assert validate_spec(spec) is spec


def test_it_names_the_criterion_and_field_of_a_bad_regex_and_schema():
    spec = spec_with({"kind": "rubric_rules", "name": "rules", "rubric": {"name": "r", "criteria": [
        {"name": "ok", "rule": {"kind": "regex", "pattern": "a+"}},
        {"name": "lookahead", "rule": {"kind": "regex", "pattern": "a(?!b)"}},
        {"name": "shape", "rule": {"kind": "json", "schema": {"type": "object", "required": "name"}}},
    ]}})
    assert problems(spec) == [
        ("component 'rules', criterion 'lookahead'", "components[0].rubric.criteria[1].rule.pattern"),
        ("component 'rules', criterion 'shape'", "components[0].rubric.criteria[2].rule.schema"),
    ]


def test_it_rejects_all_zero_and_negative_total_weights():
    zero = spec_with({"kind": "verifier", "name": "v", "reference_column": "a", "weight": 0})
    negative = spec_with({"kind": "verifier", "name": "v", "reference_column": "a", "weight": 1},
                         {"kind": "length_penalty", "name": "l", "max_length": 5, "cache_length": 1, "weight": -3})
    assert [p.message for p in check_spec(zero)] == [
        "all weights are zero; give at least one component a non-zero weight"]
    assert [p.message for p in check_spec(negative)] == [
        "weights sum to -2; a negative total rewards what you penalise"]


def test_it_names_columns_missing_from_the_dataset():
    spec = spec_with(
        {"kind": "verifier", "name": "v", "reference_column": "gold", "when": {"column": "kind", "equals": "math"}},
        {"kind": "rubric_rules", "name": "r", "rubric": {"name": "r", "criteria": [
            {"name": "match", "rule": {"kind": "answer_match", "reference_column": "solution"}}]}},
        normalization="par", par_reference_column="chosen", group_column="group",
    )
    assert problems(spec, ["prompt", "answer"]) == [
        ("component 'v'", "components[0].when.column"),
        ("component 'v'", "components[0].reference_column"),
        ("component 'r', criterion 'match'", "components[1].rubric.criteria[0].rule.reference_column"),
        ("spec 's'", "par_reference_column"),
        ("spec 's'", "group_column"),
    ]
    assert problems(spec) == []  # columns unknown: nothing to compare against


def test_it_rejects_a_reward_model_path_that_is_missing_or_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"]}))
    (tmp_path / "lm" / "model.safetensors").write_text("")
    (tmp_path / "lm" / "tokenizer.json").write_text("{}")
    spec = spec_with({"kind": "reward_model", "name": "gone", "path": str(tmp_path / "gone")},
                     {"kind": "reward_model", "name": "file", "path": str(tmp_path / "notes.txt")},
                     {"kind": "reward_model", "name": "empty", "path": str(tmp_path)},
                     {"kind": "reward_model", "name": "lm", "path": str(tmp_path / "lm")})
    messages = [str(p) for p in check_spec(spec)]
    assert messages == [
        f"component 'gone', field 'components[0].path': {tmp_path / 'gone'} does not exist",
        f"component 'file', field 'components[1].path': {tmp_path / 'notes.txt'} is a file, not a checkpoint directory",
        f"component 'empty', field 'components[2].path': {tmp_path} has no config.json: not a model directory",
        f"component 'lm', field 'components[3].path': {tmp_path / 'lm'} is a Qwen2ForCausalLM, not a "
        "sequence-classification (reward) model",
    ]


def test_it_rejects_duplicate_names_and_the_reserved_total():
    spec = spec_with({"kind": "verifier", "name": "total", "reference_column": "a"},
                     {"kind": "verifier", "name": "total", "reference_column": "a"}, normalization="group_zscore")
    assert problems(spec) == [("component 'total'", "components[0].name"), ("component 'total'", "components[1].name"),
                              ("component 'total'", "components[1].name")]


def test_it_rejects_a_rule_rubric_without_rules_and_a_soft_zone_wider_than_the_limit():
    spec = spec_with({"kind": "rubric_rules", "name": "r", "rubric": {"name": "r", "criteria": [{"name": "tone"}]}},
                     {"kind": "length_penalty", "name": "l", "max_length": 5, "cache_length": 9})
    assert problems(spec) == [("component 'r'", "components[0].rubric.criteria"),
                              ("component 'l'", "components[1].cache_length")]


def test_it_raises_one_user_error_listing_every_problem():
    spec = spec_with({"kind": "verifier", "name": "v", "reference_column": "gold", "weight": 0})
    with pytest.raises(UserError) as caught:
        validate_spec(spec, ["answer"], source="spec.yaml")
    assert str(caught.value).startswith("spec.yaml: component 'v', field 'components[0].reference_column'")
    assert "all weights are zero" in str(caught.value)


def test_it_round_trips_yaml_and_json_and_inlines_rubric_files(tmp_path):
    (tmp_path / "rubric.yaml").write_text(
        "name: r\ncriteria:\n  - name: tags\n    rule: {kind: format, check: answer_tags}\n")
    (tmp_path / "spec.yaml").write_text(
        "name: s\nnormalization: group_zscore\ncomponents:\n"
        "  - {kind: rubric_rules, name: fmt, rubric_path: rubric.yaml, weight: 2}\n"
        "  - {kind: verifier, name: v, reference_column: answer, when: {column: task, one_of: [math, code]}}\n")
    spec = load_spec(tmp_path / "spec.yaml", dataset_columns=["answer", "task"])
    assert spec.components[0].rubric.criteria[0].name == "tags" and spec.components[0].rubric_path is None
    for name in ("copy.yaml", "copy.json"):
        save_spec(spec, tmp_path / name)
        assert load_spec(tmp_path / name) == spec


def test_it_names_file_line_and_field_when_loading(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: s\ncomponents:\n  - kind: verifier\n    name: v\n    reference_column: a\n"
                    "    when: {column: task}\n")
    with pytest.raises(UserError,
                       match=r"spec.yaml, line 6: field 'components\[0\].when': Value error, give exactly one"):
        load_spec(path)
    path.write_text("name: s\ncomponents:\n  - kind: magic\n    name: v\n")
    with pytest.raises(UserError, match=r"spec.yaml, line 3: field 'components\[0\]': Input tag 'magic'"):
        load_spec(path)
    path.write_text("name: s\ncomponents:\n  - {kind: rubric_rules, name: r, rubric_path: missing.yaml}\n")
    with pytest.raises(UserError, match=r"missing.yaml: cannot read the file"):
        load_spec(path)
    json_path = tmp_path / "spec.json"
    json_path.write_text('{"name": "s",\n "components": [\n  {"kind": "verifier", "name": "v bad", "reference_column": "a"}]}')
    with pytest.raises(UserError,
                       match=r"spec.json, line 3: field 'components\[0\].name': String should match pattern"):
        load_spec(json_path)
