"""Rubrics: aggregation, veto, saturation, judged criteria, and files."""

import json
import math

import pytest

from rlcore.errors import UserError
from rlcore.judges.deterministic import DeterministicJudge
from rlcore.rubric import (
    CompiledRubric,
    Criterion,
    Rubric,
    check_rubric,
    load_rubric,
    save_rubric,
    score_rubric,
)

POLITE = {"kind": "contains", "texts": ["please", "thank"]}
SHORT = {"kind": "length", "max": 20}
NO_URLS = {"kind": "format", "check": "no_urls"}


def test_it_takes_the_weighted_mean_of_criteria():
    rubric = Rubric(name="r", criteria=[Criterion(name="polite", weight=1, rule=POLITE),
                                        Criterion(name="short", weight=3, rule=SHORT)])
    assert [s.total for s in score_rubric(rubric, ["thanks", "no thanks, this one is far too long", "meh"])] == [
        1.0, 0.25, 0.75]


def test_it_caps_the_total_when_a_critical_criterion_fails():
    rubric = Rubric(name="r", criteria=[Criterion(name="polite", weight=5, rule=POLITE),
                                        Criterion(name="no_urls", weight=1, rule=NO_URLS, critical=True, veto_cap=0.3)])
    [score] = score_rubric(rubric, ["thanks, see www.x.org"])
    assert score.total == 0.3 and score.vetoed_by == ["no_urls"]
    assert CompiledRubric(rubric).score_rules("thanks, see www.x.org", {}) == 0.3
    [passed] = score_rubric(rubric, ["thanks"])
    assert passed.total == 1.0 and passed.vetoed_by == []


def test_it_gives_diminishing_returns_with_saturating_aggregation():
    criteria = [Criterion(name="colours", description="red green blue yellow"), Criterion(name="polite", rule=POLITE)]
    plain = Rubric(name="r", criteria=criteria)
    saturating = Rubric(name="r", criteria=criteria, aggregation="saturating", saturation=3.0)
    judge = DeterministicJudge()

    def total(rubric, text):
        return score_rubric(rubric, [text], judge=judge)[0].total

    # met and failed criteria score the same; a half-met criterion is worth more than half
    assert total(saturating, "red green blue yellow thanks") == total(plain, "red green blue yellow thanks") == 1.0
    assert total(saturating, "nothing") == total(plain, "nothing") == 0.0
    assert total(plain, "red blue") == 0.25
    assert total(saturating, "red blue") == pytest.approx(0.5 * (1 - math.exp(-1.5)) / (1 - math.exp(-3.0)))
    # moving the weak criterion up pays more than the same step on a strong one
    gain_low = total(saturating, "red") - total(saturating, "nothing")
    gain_high = total(saturating, "red green blue yellow") - total(saturating, "red green blue")
    assert gain_low > 2 * gain_high


def test_it_grades_criteria_without_a_rule_with_the_judge_on_their_scale():
    rubric = Rubric(name="r", criteria=[
        Criterion(name="colours", description="red green blue yellow", scale_min=1, scale_max=5),
        Criterion(name="polite", rule=POLITE),
    ])
    [score] = score_rubric(rubric, ["red and blue, thanks"], prompts=["Name colours"], judge=DeterministicJudge())
    colours = score.criteria[0]
    assert (colours.source, colours.score, colours.normalized) == ("judge", 3.0, 0.5)
    assert score.total == pytest.approx(0.75)


def test_it_leaves_unparseable_judge_grades_out_of_the_total_and_says_why():
    rubric = Rubric(name="r", criteria=[Criterion(name="tone", description="calm"), Criterion(name="polite", rule=POLITE)])
    [score] = score_rubric(rubric, ["thanks ##"], judge=DeterministicJudge(unparseable_marker="##"))
    assert score.criteria[0].score is None and "no score found" in score.criteria[0].error
    assert score.total == 1.0


def test_it_reports_judged_criteria_without_a_judge():
    rubric = Rubric(name="r", criteria=[Criterion(name="tone"), Criterion(name="polite", rule=POLITE)])
    [score] = score_rubric(rubric, ["hi"])
    assert score.criteria[0].error == "no judge given for a criterion without a rule"
    assert score.total == 0.0


def test_it_finds_every_problem_with_criterion_and_field():
    rubric = Rubric(name="r", criteria=[
        Criterion(name="a", rule={"kind": "regex", "pattern": "(?<!x)y"}),
        Criterion(name="b", scale_min=5, scale_max=1),
        Criterion(name="a", rule={"kind": "json", "schema": {"type": "nope"}}),
    ])
    found = [(p.where, p.field) for p in check_rubric(rubric)]
    assert found == [("criterion 'a'", "criteria[0].rule.pattern"), ("criterion 'b'", "criteria[1].scale_max"),
                     ("criterion 'a'", "criteria[2].name"), ("criterion 'a'", "criteria[2].rule.schema")]
    with pytest.raises(UserError, match="criteria\\[0\\].rule.pattern"):
        CompiledRubric(rubric)


def test_it_saves_and_loads_yaml_and_json_alike(tmp_path):
    rubric = Rubric(name="r", criteria=[
        Criterion(name="j", rule={"kind": "json", "schema": {"type": "object"}}, critical=True, veto_cap=0.1),
        Criterion(name="tone", description="calm", scale_min=1, scale_max=10, weight=2),
    ], aggregation="saturating")
    for name in ("r.yaml", "r.json"):
        save_rubric(rubric, tmp_path / name)
        assert load_rubric(tmp_path / name) == rubric
    assert json.loads((tmp_path / "r.json").read_text())["criteria"][0]["rule"]["schema"] == {"type": "object"}


def test_it_names_the_line_and_list_path_of_every_wrong_value(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: r\ncriteria:\n  - name: a\n  - name: b\n    weight: -1\n  - weight: 1\n")
    with pytest.raises(UserError) as raised:
        load_rubric(path)
    assert str(raised.value).splitlines() == [
        f"{path}, line 5: field 'criteria[1].weight': Input should be greater than or equal to 0",
        f"{path}, line 6: field 'criteria[2].name': Field required",
    ]


def test_it_names_file_line_and_field_of_a_wrong_value(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: r\ncriteria:\n  - name: a\n    weight: -1\n")
    with pytest.raises(UserError, match=r"r.yaml, line 4: field 'criteria\[0\].weight': Input should be greater"):
        load_rubric(path)
    path.write_text("name: r\ncriteria:\n  - name: a\n    rule: {kind: regex, pattern: '(a'}\n")
    with pytest.raises(UserError, match=r"r.yaml: criterion 'a', field 'criteria\[0\].rule.pattern'"):
        load_rubric(path)
    path.write_text("name: r\ncriteria: [\n")
    with pytest.raises(UserError, match=r"r.yaml, line \d+: not valid YAML"):
        load_rubric(path)


BILLION_LAUGHS = "\n".join(
    ["name: lol", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]" for p, n in zip("abcdefgh", "bcdefghi")]
    + ["criteria: [{name: x, rule: {kind: contains, texts: *i}}]"]) + "\n"


def test_it_refuses_yaml_aliases_naming_the_line(tmp_path):
    # a 430-byte file like this one expanded to a 3 MB stored definition
    path = tmp_path / "lol.yaml"
    path.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 600
    with pytest.raises(UserError, match=r"lol.yaml, line 3: not valid YAML \(aliases \(\*a\) are not allowed"):
        load_rubric(path)


def test_it_refuses_an_oversized_or_too_deeply_nested_document(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: big\n# " + "x" * 1_000_000 + "\n")
    with pytest.raises(UserError, match=r"big.yaml: not valid YAML \(the document has 1,000,013 characters, more"):
        load_rubric(path)
    path.write_text("[" * 50_000)
    with pytest.raises(UserError, match="big.yaml: nested too deeply"):
        load_rubric(path)
