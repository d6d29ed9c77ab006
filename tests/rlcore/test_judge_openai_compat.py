"""The OpenAI-compatible judge backend against a real chat-completions server on loopback."""

import asyncio
import logging
import math
import time

import pytest

from rlcore.errors import UserError
from rlcore.judges.base import GradeRequest, PairRequest, RankRequest
from rlcore.judges.openai_compat import LogprobPairVerdict, OpenAICompatJudge, OpenAICompatSettings
from rlcore.judges.testing_server import ChatCompletionsServer, ScriptedReply, always, scripted

PAIR = PairRequest(request_id="r1", prompt="What is 2+2?", response_a="4", response_b="5")
VERDICT_A = [[("Verdict", -0.01)], [(":", 0.0)], [(" A", math.log(0.7)), (" B", math.log(0.2)), (" The", math.log(0.1))]]


def judge_for(server, **overrides):
    settings = dict(base_url=server.base_url, model="judge-m", max_retries=2, backoff_base_s=0.01,
                    backoff_max_s=0.05, timeout_s=2.0)
    settings.update(overrides)
    return OpenAICompatJudge(OpenAICompatSettings(**settings))


def test_it_takes_the_confidence_from_the_verdict_tokens_logprobs():
    with ChatCompletionsServer(always("Verdict: A", logprobs=VERDICT_A)) as server:
        (result,) = judge_for(server, top_logprobs=3).compare([PAIR])
        body = server.stats.bodies[0]
    assert isinstance(result, LogprobPairVerdict)
    assert result.verdict == "A" and result.error is None and result.raw_reply == "Verdict: A"
    assert result.confidence == pytest.approx(0.7 / 0.9)  # renormalised over the labels A and B
    assert result.label_probabilities["B"] == pytest.approx(0.2 / 0.9)
    assert body["logprobs"] is True and body["top_logprobs"] == 3 and body["model"] == "judge-m"
    assert body["temperature"] == 0.0 and "[Response A]\n4" in body["messages"][-1]["content"]
    assert result.rendered_prompt == body["messages"][-1]["content"]


def test_it_keeps_the_self_reported_confidence_when_the_server_gives_no_logprobs():
    with ChatCompletionsServer(always("Verdict: B\nStrength: 2\nConfidence: 0.6")) as server:
        (result,) = judge_for(server).compare([PAIR])
    assert (result.verdict, result.strength, result.confidence) == ("B", 2, 0.6)
    assert not isinstance(result, LogprobPairVerdict)


def test_it_honours_retry_after_on_429_then_succeeds():
    policy = scripted([ScriptedReply(status=429, headers={"Retry-After": "0.4"}), ScriptedReply(content="Verdict: B")])
    with ChatCompletionsServer(policy) as server:
        started = time.monotonic()
        (result,) = judge_for(server).compare([PAIR])
        elapsed = time.monotonic() - started
        stats = server.stats
    assert result.verdict == "B" and result.error is None
    assert elapsed >= 0.4
    assert stats.statuses == {429: 1, 200: 1}


def test_it_pauses_every_request_while_rate_limited():
    policy = scripted([ScriptedReply(status=429, headers={"Retry-After": "0.3"})], then=ScriptedReply(content="Verdict: A"))
    with ChatCompletionsServer(policy, latency_s=0.05) as server:
        results = judge_for(server, max_concurrency=4).compare([PAIR] * 6)
        stats = server.stats
    assert all(r.verdict == "A" for r in results)
    assert stats.statuses == {429: 1, 200: 6}  # the others waited instead of hammering the server


def test_it_gives_up_on_endless_429s_without_inventing_a_label():
    with ChatCompletionsServer(always(status=429, headers={"Retry-After": "0"})) as server:
        (result,) = judge_for(server, max_retries=3).compare([PAIR])
        assert server.stats.requests == 4
    assert result.verdict is None and result.raw_reply is None
    assert "rate limited (429)" in result.error and "gave up after 4 attempt(s)" in result.error


def test_it_retries_server_errors_then_succeeds():
    policy = scripted([ScriptedReply(status=500), ScriptedReply(status=503), ScriptedReply(content="Verdict: tie")])
    with ChatCompletionsServer(policy) as server:
        (result,) = judge_for(server).compare([PAIR])
        assert server.stats.statuses == {500: 1, 503: 1, 200: 1}
    assert result.verdict == "tie" and result.strength is None


def test_it_reports_exhausted_retries_on_500s():
    with ChatCompletionsServer(always(status=500, error_message="model crashed")) as server:
        (result,) = judge_for(server, max_retries=2).compare([PAIR])
        assert server.stats.requests == 3
    assert result.verdict is None
    assert "server error 500 model crashed" in result.error and "gave up after 3" in result.error


def test_it_times_out_slow_replies_and_retries():
    policy = scripted([ScriptedReply(content="Verdict: A", delay_s=1.0), ScriptedReply(content="Verdict: B")])
    with ChatCompletionsServer(policy) as server:
        started = time.monotonic()
        (result,) = judge_for(server, timeout_s=0.2).compare([PAIR])
        elapsed = time.monotonic() - started
    assert result.verdict == "B"  # the late "A" was never used
    assert elapsed < 0.9


def test_it_reports_a_timeout_when_every_attempt_is_slow():
    with ChatCompletionsServer(always("Verdict: A", delay_s=1.0)) as server:
        (result,) = judge_for(server, timeout_s=0.15, max_retries=1).compare([PAIR])
    assert result.verdict is None and "timed out after 0.15s" in result.error


def test_it_rejects_a_malformed_json_reply_without_a_label():
    with ChatCompletionsServer(always(raw_body='{"choices": [{"message": "Verdict: A"')) as server:
        (result,) = judge_for(server).compare([PAIR])
        assert server.stats.requests == 1
    assert result.verdict is None and "malformed reply" in result.error


def test_it_records_a_refusal_as_no_verdict():
    with ChatCompletionsServer(always(None, refusal="I can't help with comparing these.")) as server:
        (result,) = judge_for(server).compare([PAIR])
    assert result.verdict is None and result.strength is None
    assert result.error.startswith("judge refused: I can't help")
    assert result.raw_reply == "I can't help with comparing these."


def test_it_names_a_refusal_written_as_plain_text():
    with ChatCompletionsServer(always("I'm sorry, but I cannot judge this.")) as server:
        (result,) = judge_for(server).compare([PAIR])
    assert result.verdict is None and result.error.startswith("judge refused")


def test_it_never_invents_a_verdict_when_the_reply_picks_neither():
    with ChatCompletionsServer(always("Both responses have merit; it depends.")) as server:
        (result,) = judge_for(server).compare([PAIR])
    assert result.verdict is None and result.error.startswith("no verdict found")
    assert result.raw_reply == "Both responses have merit; it depends."


def test_it_says_when_a_reply_was_cut_at_the_token_limit():
    with ChatCompletionsServer(always("Let me think about response A and", finish_reason="length")) as server:
        (result,) = judge_for(server).compare([PAIR])
    assert result.verdict is None and "cut off at the token limit" in result.error


def test_it_reports_an_unreachable_endpoint():
    server = ChatCompletionsServer(always("Verdict: A"))
    url = server.base_url
    server.stop()  # the port is now closed
    judge = OpenAICompatJudge(OpenAICompatSettings(base_url=url, model="m", max_retries=1, backoff_base_s=0.01))
    results = judge.compare([PAIR, PAIR])
    assert [r.verdict for r in results] == [None, None]
    assert all("could not reach" in r.error and "gave up after 2" in r.error for r in results)


def test_it_respects_the_concurrency_bound():
    with ChatCompletionsServer(always("Verdict: A"), latency_s=0.08) as server:
        results = judge_for(server, max_concurrency=3).compare([PAIR] * 12)
        stats = server.stats
    assert all(r.verdict == "A" for r in results)
    assert stats.requests == 12 and stats.max_in_flight == 3


def test_it_asks_again_without_logprobs_when_the_server_rejects_them():
    policy = scripted([ScriptedReply(status=400, error_message="logprobs are not supported for this model"),
                       ScriptedReply(content="Verdict: A")])
    with ChatCompletionsServer(policy) as server:
        judge = judge_for(server)
        first = judge.compare([PAIR])[0]
        second = judge.compare([PAIR])[0]
        bodies = server.stats.bodies
    assert first.verdict == "A" and second.verdict == "A"
    assert "logprobs" in bodies[0] and all("logprobs" not in b for b in bodies[1:])


def test_it_never_shows_the_api_key(caplog, monkeypatch):
    secret = "sk-test-very-secret-0123456789"
    caplog.set_level(logging.DEBUG)
    with ChatCompletionsServer(always("Verdict: A"), api_key=secret) as server:
        good = OpenAICompatJudge(OpenAICompatSettings(base_url=server.base_url, model="m", api_key=secret))
        assert good.compare([PAIR])[0].verdict == "A"
        monkeypatch.setenv("JUDGE_KEY_FOR_TEST", "sk-wrong-" + secret)
        bad_settings = OpenAICompatSettings(base_url=server.base_url, model="m", api_key_env="JUDGE_KEY_FOR_TEST",
                                            max_retries=1, backoff_base_s=0.01)
        bad = OpenAICompatJudge(bad_settings)
        (refused,) = bad.compare([PAIR])
        assert server.stats.authorization_failures == 1
    assert refused.verdict is None and "401" in refused.error
    shown = " ".join([repr(good), repr(good.settings), repr(good.client), str(good.settings), repr(bad_settings),
                      good.settings.model_dump_json(), refused.model_dump_json(), caplog.text])
    assert secret not in shown


def test_it_names_an_unset_api_key_variable():
    with pytest.raises(UserError, match="NO_SUCH_JUDGE_KEY"):
        OpenAICompatJudge(OpenAICompatSettings(base_url="http://127.0.0.1:9/v1", model="m",
                                               api_key_env="NO_SUCH_JUDGE_KEY"))


def test_it_grades_and_ranks_with_logprob_confidence():
    grade_tokens = [[("Score", 0.0)], [(":", 0.0)], [(" 4", math.log(0.6)), (" 3", math.log(0.3)), (" x", -1.0)]]
    rank_tokens = [[("Ranking", 0.0)], [(":", 0.0)], [(" 2", math.log(0.5)), (" 1", math.log(0.5))], [(" >", 0.0)],
                   [(" 1", 0.0)]]
    with ChatCompletionsServer(always("Score: 4", logprobs=grade_tokens)) as server:
        (grade,) = judge_for(server).grade([GradeRequest(prompt="p", response="r", criterion="clarity",
                                                         scale_min=1, scale_max=5)])
    with ChatCompletionsServer(always("Ranking: 2 > 1", logprobs=rank_tokens)) as server:
        (ranking,) = judge_for(server).rank([RankRequest(prompt="p", responses=["x", "y"])])
    assert grade.verdict == 4.0 and grade.confidence == pytest.approx(0.6 / 0.9)
    assert ranking.verdict == [1, 0] and ranking.confidence == pytest.approx(0.5)


def test_it_serves_the_sync_batch_api_from_inside_an_event_loop():
    with ChatCompletionsServer(always("Verdict: B")) as server:
        judge = judge_for(server)

        async def inside_a_loop():
            return judge.compare([PAIR])

        (result,) = asyncio.run(inside_a_loop())
    assert result.verdict == "B"


@pytest.mark.parametrize("status", [200, 403, 500])
def test_it_never_repeats_what_an_endpoint_that_is_not_a_judge_answered(status):
    """A designer picks the endpoint; were it an internal service, its answer must not reach them."""
    body = "<html>internal admin page: db password hunter2</html>"
    with ChatCompletionsServer(always(raw_body=body, status=status)) as server:
        (result,) = judge_for(server, max_retries=0).compare([PAIR])
    assert result.verdict is None and result.raw_reply is None
    assert "hunter2" not in result.error and "internal admin" not in result.error
    assert f"{len(body)} characters, not shown" in result.error
