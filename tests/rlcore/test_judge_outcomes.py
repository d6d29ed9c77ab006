"""What an LM labelling run's verdicts are worth: each pair's outcome, counted per run, checked against
a hand count of the replies a real loopback server sent, and a warning when most verdicts contradict
themselves. The interval is held against scipy's Wilson interval."""

import json
import re
import subprocess
import sys
import threading

import httpx
import pytest
from scipy.stats import binomtest

from rlcore.cli import main
from rlcore.judges.outcomes import summarize_outcomes, wilson_interval
from rlcore.judges.testing_server import ChatCompletionsServer, ScriptedReply, position_biased, prefers_keyword

_keyword = prefers_keyword("thanks")


def mixed_judge(body: dict) -> ScriptedReply:
    """A judge whose answer depends on the pair's prompt: POSITION -> always "A" (the response shown
    first), SECOND -> always "B", REFUSE -> a refusal, GARBLE -> no verdict, TIE -> "tie" both ways,
    HALF -> "tie" when alpha is shown first, else "A"; otherwise it prefers the "thanks" answer."""
    text = str(body["messages"][-1]["content"])
    if "POSITION" in text:
        return ScriptedReply(content="Verdict: A\nStrength: 2")
    if "SECOND" in text:
        return ScriptedReply(content="Verdict: B\nStrength: 1")
    if "REFUSE" in text:
        return ScriptedReply(content=None, refusal="I can't judge that.")
    if "GARBLE" in text:
        return ScriptedReply(content="Both are fine")
    if "TIE" in text:
        return ScriptedReply(content="Verdict: tie")
    if "HALF" in text:
        first = text.split("[Response A]", 1)[1].split("[Response B]", 1)[0]
        return ScriptedReply(content="Verdict: tie" if "alpha" in first else "Verdict: A\nStrength: 1")
    return _keyword(body)


def mixed_rows(kinds: dict[str, int]) -> list[dict]:
    """``{"POSITION": 5, ...}`` pairs per kind (``KEYWORD``: one answer says thanks), as dataset rows."""
    rows = []
    for kind, n in kinds.items():
        for i in range(n):
            if kind == "KEYWORD":
                good, bad = f"Sure, answer {i}, thanks", f"no {i}"
                rows.append({"prompt": f"Question {i}?", "responses": [good, bad] if i % 2 else [bad, good]})
            else:
                rows.append({"prompt": f"{kind} question {i}", "responses": [f"alpha {kind} {i}", f"beta {kind} {i}"]})
    return rows


class Recorder:
    """Wraps a policy and keeps every (rendered prompt, reply) the server sent, for a hand count."""

    def __init__(self, policy):
        self.policy, self.served, self._lock = policy, [], threading.Lock()

    def __call__(self, body):
        reply = self.policy(body)
        with self._lock:
            self.served.append((str(body["messages"][-1]["content"]), reply))
        return reply


def hand_count(served, pairs: list[tuple[str, str, str]]) -> dict[str, int]:
    """Count each pair's outcome from the replies alone: find its two requests by which response is shown
    first, read "Verdict: X" with a plain regex, map the swapped one back (A<->B) and classify."""
    counts: dict[str, int] = {}
    for prompt, a, b in pairs:
        def reply_for(first, second):
            matches = [r for text, r in served if f"[Response A]\n{first}\n" in text and f"[Response B]\n{second}\n"
                       in text and prompt in text]
            assert len(matches) == 1, (prompt, first, len(matches))
            return matches[0]

        verdicts = []
        for index, reply in enumerate((reply_for(a, b), reply_for(b, a))):
            if reply.refusal:
                verdicts.append("refused")
                continue
            found = re.search(r"Verdict: (A|B|tie)", reply.content or "")
            if not found:
                verdicts.append("unparseable")
                continue
            verdict = found.group(1)
            verdicts.append({"A": "B", "B": "A"}.get(verdict, verdict) if index == 1 else verdict)
        forward, swapped = verdicts
        if "refused" in verdicts:
            kind = "refused"
        elif "unparseable" in verdicts:
            kind = "unparseable"
        elif forward == swapped:
            kind = "tie" if forward == "tie" else "verdict"
        elif "tie" in verdicts:
            kind = "disagree_tie"
        else:
            kind = "disagree_first" if forward == "A" else "disagree_second"
        counts[kind] = counts.get(kind, 0) + 1
    return counts


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (3, 10), (94, 114), (57, 60), (0, 25), (250, 500)])
def test_it_computes_the_wilson_interval_that_scipy_computes(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-9)


def test_it_counts_each_outcome_from_the_replies_a_real_server_sent_and_warns(tmp_path, capsys):
    kinds = {"POSITION": 9, "SECOND": 2, "HALF": 1, "KEYWORD": 3, "TIE": 1, "REFUSE": 2, "GARBLE": 1}
    rows = mixed_rows(kinds)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"id": str(i), "prompt": r["prompt"], "response_a": r["responses"][0],
                                         "response_b": r["responses"][1]}) + "\n" for i, r in enumerate(rows)))
    recorder = Recorder(mixed_judge)
    with ChatCompletionsServer(recorder) as server:
        code = main(["judge", "pairwise", "--endpoint", server.base_url, "--model", "m", "--input", str(pairs),
                     "--max-retries", "0"])
    captured = capsys.readouterr()
    assert code == 0
    lines = [json.loads(line) for line in captured.out.splitlines()]
    expected = hand_count(recorder.served, [(r["prompt"], *r["responses"]) for r in rows])
    assert expected == {"disagree_first": 9, "disagree_second": 2, "disagree_tie": 1, "verdict": 3, "tie": 1,
                        "refused": 2, "unparseable": 1}
    got: dict[str, int] = {}
    for line in lines:
        got[line["outcome"]] = got.get(line["outcome"], 0) + 1
    assert got == expected

    summary = summarize_outcomes([line["outcome"] for line in lines], mode="pairwise")
    assert (summary.usable, summary.genuine_ties, summary.order_disagreements) == (3, 1, 12)
    assert (summary.refused, summary.unparseable, summary.call_failed, summary.n_comparisons) == (2, 1, 0, 19)
    # 12 of the 16 answered pairs disagree between orders: more than half, so a warning, with scipy's interval.
    assert summary.answered == 16 and summary.contradictory_share == pytest.approx(12 / 16)
    ci = binomtest(12, 16).proportion_ci(method="wilson")
    assert summary.contradictory_interval == pytest.approx((ci.low, ci.high))
    assert summary.warning and "12 of 16" in summary.warning and "recorded as ties" in summary.warning
    assert "shown first (9 of 11 opposite picks): position bias" in summary.warning
    # The CLI says the same on stderr: the breakdown, then the warning.
    assert "3 usable verdicts, 12 order disagreements [picked first shown 9, second shown 2, tie vs pick 1]" \
        in captured.err
    assert "1 genuine ties, 2 refused, 1 unparseable" in captured.err
    assert "WARNING: Most of this judge's verdicts contradict themselves" in captured.err


def test_it_does_not_warn_when_most_verdicts_agree_between_orders():
    summary = summarize_outcomes(["verdict"] * 5 + ["tie"] + ["disagree_first"] * 3 + ["refused"] * 9,
                                 mode="pairwise")
    # 3 of 9 answered disagree; the 9 refusals are no label, not contradictions.
    assert summary.contradictory_share == pytest.approx(3 / 9) and summary.warning is None
    assert summary.no_label == 9
    half = summarize_outcomes(["verdict", "disagree_second"], mode="pairwise")
    assert half.contradictory_share == 0.5 and half.warning is None  # "most" means more than half
    random = summarize_outcomes(["disagree_first"] * 4 + ["disagree_second"] * 4 + ["verdict"], mode="pairwise")
    assert "close to random" in random.warning and "opposite picks): position bias" not in random.warning
    assert summarize_outcomes([], mode="ranking").contradictory_share is None
    with pytest.raises(ValueError, match="unknown judging outcome"):
        summarize_outcomes(["labelled"], mode="pairwise")


def test_it_marks_rankings_whose_two_orders_differ():
    from rlcore.judges.base import RankingResult
    from rlcore.judges.debias import combine_rankings

    def r(order, error=None):
        return RankingResult(request_id=None, judge="j", rendered_prompt="", raw_reply="", verdict=order, error=error)

    assert combine_rankings(None, r([2, 0, 1]), r([0, 2, 1])).outcome == "verdict"
    assert combine_rankings(None, r([0, 1, 2]), r([0, 1, 2])).outcome == "disagree"
    assert combine_rankings(None, r([0, 1, 2]), r(None, "judge refused: no")).outcome == "refused"
    assert combine_rankings(None, r(None, "judge call failed: timed out"), r([0, 1, 2])).outcome == "call_failed"


def test_the_test_server_can_be_told_to_answer_position_biased():
    process = subprocess.Popen([sys.executable, "-m", "rlcore", "judge", "serve-test", "--port", "0",
                                "--position-bias", "second"], stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
        answers = [httpx.post(url + "/chat/completions", json={"model": "m", "messages": [
            {"role": "user", "content": text}]}, timeout=10).json()["choices"][0]["message"]["content"]
            for text in ("[Response A]\nyes\n\n[Response B]\nno", "[Response A]\nno\n\n[Response B]\nyes")]
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert answers == ["Verdict: B\nStrength: 2"] * 2
    assert position_biased("first")({"messages": []}).content.startswith("Verdict: A")
