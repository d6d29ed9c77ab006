"""Judging both orders through a real backend: position bias measured, labels combined by the documented rule."""

import math

from rlcore.judges.base import PairRequest, PairVerdict, RankRequest
from rlcore.judges.debias import CriterionToGrade, ResponseToGrade, combine_orders, compare_both_orders, \
    grade_rubric, rank_both_orders
from rlcore.judges.openai_compat import OpenAICompatJudge, OpenAICompatSettings
from rlcore.judges.testing_server import ChatCompletionsServer, ScriptedReply, always, prefers_keyword

THANKS_SECOND = PairRequest(request_id="p1", prompt="Say hi", response_a="hello", response_b="hello, thanks")


def judge_for(server):
    return OpenAICompatJudge(OpenAICompatSettings(base_url=server.base_url, model="m", max_retries=0, timeout_s=2))


def verdict(label, strength=None, error=None):
    return PairVerdict(request_id=None, judge="j", rendered_prompt="", raw_reply="", verdict=label,
                       strength=strength, error=error)


def test_it_agrees_across_orders_for_a_content_judge_and_averages_logprob_confidence():
    with ChatCompletionsServer(prefers_keyword("thanks", confidence=0.9)) as server:
        (label,) = compare_both_orders(judge_for(server), [THANKS_SECOND])
        prompts = [b["messages"][-1]["content"] for b in server.stats.bodies]
    assert (label.verdict, label.strength, label.position_bias) == ("B", 2, False)
    assert (label.forward_verdict, label.swapped_verdict, label.swapped.verdict) == ("B", "B", "A")
    assert label.confidence_source == "logprobs"
    assert abs(label.confidence - 0.9) < 1e-9
    assert {label.forward.rendered_prompt, label.swapped.rendered_prompt} == set(prompts)
    assert "[Response A]\nhello, thanks" in label.swapped.rendered_prompt


def test_it_flags_position_bias_and_ties_when_the_orders_disagree():
    first_always = [[("Verdict", 0.0)], [(":", 0.0)], [(" A", math.log(0.8)), (" B", math.log(0.2))]]
    with ChatCompletionsServer(always("Verdict: A\nStrength: 3", logprobs=first_always)) as server:
        (label,) = compare_both_orders(judge_for(server), [THANKS_SECOND])
    assert label.position_bias is True
    assert (label.forward_verdict, label.swapped_verdict) == ("A", "B")
    assert label.verdict == "tie" and label.strength is None
    assert label.label_probabilities["A"] == label.label_probabilities["B"] == 0.5
    assert label.confidence == 0.0  # neither order said tie


def test_it_uses_verdict_agreement_when_there_are_no_logprobs():
    assert combine_orders(None, verdict("B", 1), verdict("A", 3)).confidence == 1.0
    half = combine_orders(None, verdict("tie"), verdict("A", 2))
    assert (half.verdict, half.position_bias, half.confidence, half.confidence_source) == ("tie", True, 0.5, "agreement")


def test_it_leaves_the_pair_unlabelled_when_one_order_fails():
    label = combine_orders("x", verdict("A", 2), verdict(None, error="no verdict found"))
    assert label.verdict is None and label.position_bias is None and not label.ok
    assert label.error == "order B/A: no verdict found"


def test_it_leaves_pairs_unlabelled_when_the_server_is_down():
    server = ChatCompletionsServer(always("Verdict: A"))
    server.stop()
    judge = OpenAICompatJudge(OpenAICompatSettings(base_url=server.base_url, model="m", max_retries=0))
    (label,) = compare_both_orders(judge, [THANKS_SECOND])
    assert label.verdict is None and "order A/B: judge call failed: could not reach" in label.error


def test_it_ranks_both_orders_and_maps_the_reversed_ranking_back():
    # a judge that always ranks whatever is shown first best: pure position bias
    with ChatCompletionsServer(always("Ranking: 1 > 2 > 3")) as server:
        (ranking,) = rank_both_orders(judge_for(server), [RankRequest(prompt="p", responses=["x", "y", "z"])])
        shown = [b["messages"][-1]["content"] for b in server.stats.bodies]
    assert ranking.position_bias is True and ranking.confidence == 0.0
    assert ranking.reversed.verdict == [0, 1, 2]  # in its own (reversed) indices: z, y, x
    assert ranking.verdict == [0, 1, 2]  # all tied on mean position; the as-given order breaks ties
    assert sorted("[Response 1]\nz" in s for s in shown) == [False, True]  # one as given, one reversed


def test_it_grades_every_criterion_of_every_response_in_one_batch():
    replies = {"clarity": "Score: 4", "accuracy": "no idea"}

    def policy(body):
        text = body["messages"][-1]["content"]
        return ScriptedReply(content=next(r for c, r in replies.items() if f"Criterion: {c}" in text))

    criteria = [CriterionToGrade(name="clarity", scale_min=1, scale_max=5), CriterionToGrade(name="accuracy")]
    items = [ResponseToGrade(request_id="row1", prompt="p", response="r1"),
             ResponseToGrade(request_id="row2", prompt="p", response="r2")]
    with ChatCompletionsServer(policy) as server:
        graded = grade_rubric(judge_for(server), items, criteria)
        assert server.stats.requests == 4
    assert [list(g) for g in graded] == [["clarity", "accuracy"]] * 2
    assert graded[1]["clarity"].verdict == 4.0 and graded[1]["clarity"].request_id == "row2/clarity"
    assert graded[0]["accuracy"].verdict is None and graded[0]["accuracy"].error.startswith("no score found")
