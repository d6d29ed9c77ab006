"""The judge interface: batch methods, audit trail, and never inventing a label."""

import pytest

from rlcore.errors import UserError
from rlcore.judges import GradeRequest, Judge, JudgePromptTemplate, JudgeTemplates, PairRequest, RankRequest
from rlcore.judges.deterministic import CannedReplyJudge, DeterministicJudge
from rlcore.judges.prompts import parse_grade_reply, parse_pair_reply, parse_rank_reply


def test_it_satisfies_the_judge_protocol():
    assert isinstance(DeterministicJudge(), Judge)
    assert isinstance(CannedReplyJudge(lambda p: "Score: 1"), Judge)


def test_it_returns_one_result_per_request_in_order_with_ids():
    judge = DeterministicJudge()
    requests = [
        GradeRequest(request_id=f"r{i}", prompt="p", response=text, criterion="c", description="alpha beta",
                     scale_min=1, scale_max=5)
        for i, text in enumerate(["alpha beta", "nothing", "alpha"])
    ]
    results = judge.grade(requests)
    assert [r.request_id for r in results] == ["r0", "r1", "r2"]
    assert [r.verdict for r in results] == [5.0, 1.0, 3.0]
    assert "alpha beta" in results[0].rendered_prompt and results[0].raw_reply.startswith("Score:")


def test_it_leaves_the_verdict_empty_with_a_reason_when_the_reply_is_unparseable():
    judge = DeterministicJudge(unparseable_marker="<<x>>")
    grade = judge.grade([GradeRequest(prompt="p", response="a <<x>>", criterion="c")])[0]
    pair = judge.compare([PairRequest(prompt="p", response_a="<<x>>", response_b="b")])[0]
    rank = judge.rank([RankRequest(prompt="p", responses=["<<x>>", "b"])])[0]
    for result in (grade, pair, rank):
        assert result.verdict is None and result.error and not result.ok
        assert result.raw_reply is not None


def test_it_keeps_the_rest_of_a_batch_when_one_call_fails():
    def reply(prompt: str):
        return RuntimeError("timeout") if "boom" in prompt else "Verdict: A\nStrength: 2\nConfidence: 0.7"

    results = CannedReplyJudge(reply).compare([
        PairRequest(prompt="ok", response_a="x", response_b="y"),
        PairRequest(prompt="boom", response_a="x", response_b="y"),
    ])
    assert (results[0].verdict, results[0].strength, results[0].confidence) == ("A", 2, 0.7)
    assert results[1].verdict is None and results[1].raw_reply is None and "timeout" in results[1].error


def test_it_rejects_a_grade_outside_the_criterion_scale():
    result = CannedReplyJudge(lambda p: "Score: 11").grade(
        [GradeRequest(prompt="p", response="r", criterion="c", scale_min=1, scale_max=10)])[0]
    assert result.verdict is None and "outside the scale 1..10" in result.error


def test_it_records_the_template_name_and_version_used():
    template = JudgePromptTemplate(name="terse", version=3, mode="rank", text="{prompt}\n{responses}\nRank them.")
    judge = CannedReplyJudge(lambda p: "Ranking: 2 > 1", templates=JudgeTemplates(rank=template))
    result = judge.rank([RankRequest(prompt="q", responses=["x", "y"])])[0]
    assert result.judge == "canned [terse@3]" and result.verdict == [1, 0]
    assert result.rendered_prompt == "q\n[Response 1]\nx\n\n[Response 2]\ny\nRank them."


def test_it_names_the_unknown_placeholder_when_rendering():
    template = JudgePromptTemplate(name="mine", mode="compare", text="{prompt} {response} {response_b}")
    with pytest.raises(UserError, match=r"template 'mine' \(compare\): unknown placeholder \{response\}"):
        template.render(prompt="p", response_a="a", response_b="b")
    with pytest.raises(UserError, match=r"no value for placeholder \{response_b\}"):
        JudgePromptTemplate(name="m", mode="compare", text="{response_b}").render(prompt="p")


def test_it_leaves_json_braces_in_templates_alone():
    template = JudgePromptTemplate(name="j", mode="grade", text='Reply as {"score": n} for {{criterion}} {criterion}')
    assert template.render(criterion="tone") == 'Reply as {"score": n} for {criterion} tone'


def test_it_reports_a_template_filed_under_the_wrong_mode():
    wrong = JudgePromptTemplate(name="g", mode="grade", text="{response}")
    assert JudgeTemplates(compare=wrong).problems() == ["template 'g' is a grade template, used for compare"]


def test_it_takes_the_last_explicit_verdict_and_never_guesses_strength():
    assert parse_pair_reply("Verdict: A ... on reflection\nVerdict: B").verdict == "B"
    parsed = parse_pair_reply("Verdict: A")
    assert parsed.verdict == "A" and parsed.strength is None
    assert parse_pair_reply("Verdict: tie\nStrength: 3").strength is None
    assert parse_pair_reply("A=B").verdict == "tie"
    assert parse_pair_reply("A>A").verdict is None


def test_it_parses_scores_and_rankings_strictly():
    assert parse_grade_reply("Score: 3/5", 1, 5).verdict == 3.0
    assert parse_grade_reply("**Score:** 2.5", 0, 5).verdict == 2.5
    assert parse_grade_reply("Score: high", 1, 5).verdict is None
    assert parse_rank_reply("Ranking: 1 > 2", 3).verdict is None
    assert parse_rank_reply("Ranking: 1 > 2 > banana", 3).error.startswith("ranking has an entry 'banana'")
