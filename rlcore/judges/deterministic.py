"""Judges that need no model, for tests, previews and benchmarks.

:class:`DeterministicJudge` scores a response by the share of keywords it covers — words of the criterion
description, the reference answer and (for comparisons) the criterion text — so the same input always gets
the same verdict. It still renders the real prompt templates and writes a textual reply that goes through
the real reply parsers, so everything downstream of a judge is exercised.

>>> judge = DeterministicJudge()
>>> [r.verdict for r in judge.grade([GradeRequest(prompt="Name a colour", response="red and blue",
...      criterion="mentions", description="red blue green", scale_min=0, scale_max=3)])]
[2.0]
>>> v = judge.compare([PairRequest(prompt="p", response_a="a cat", response_b="a cat sat on the mat",
...                                criterion="cat sat mat")])[0]
>>> v.verdict, v.strength
('B', 3)
>>> judge.rank([RankRequest(prompt="p", responses=["mat", "cat mat", "x"], criterion="cat mat")])[0].verdict
[1, 0, 2]

:class:`CannedReplyJudge` is a :class:`~rlcore.judges.base.PromptedJudge` whose "model" is a function of the
rendered prompt: the way to test what a backend does with odd replies.

>>> canned = CannedReplyJudge(lambda prompt: "no idea")
>>> canned.compare([PairRequest(prompt="p", response_a="x", response_b="y")])[0].error
'no verdict found (expected a line "Verdict: A", "Verdict: B" or "Verdict: tie")'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from rlcore.judges.base import (
    GradeRequest,
    GradeResult,
    PairRequest,
    PairVerdict,
    PromptedJudge,
    RankingResult,
    RankRequest,
)
from rlcore.judges.prompts import (
    JudgeTemplates,
    grade_placeholders,
    pair_placeholders,
    parse_grade_reply,
    parse_pair_reply,
    parse_rank_reply,
    rank_placeholders,
)

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was were will with "
    "should must does do response answer".split()
)


def keywords(text: str) -> frozenset[str]:
    """Lower-case content words of a text.

    >>> sorted(keywords("The answer should be RED, and blue."))
    ['blue', 'red']
    """
    return frozenset(w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS)


def coverage(response: str, wanted: frozenset[str], target_words: int = 50) -> float:
    """Share of ``wanted`` keywords found in ``response``; with no keywords, length up to ``target_words``.

    >>> coverage("red blue", frozenset({"red", "blue", "green", "pink"}))
    0.5
    >>> coverage("one two three", frozenset(), target_words=6)
    0.5
    """
    if not wanted:
        return min(1.0, len(_WORD.findall(response.lower())) / target_words)
    return len(wanted & keywords(response)) / len(wanted)


class DeterministicJudge:
    """A keyword-coverage judge with the full :class:`~rlcore.judges.base.Judge` interface.

    ``tie_margin``: coverage differences at most this small are ties; strengths 1/2/3 start above it, at
    ``0.2`` and at ``0.4``. ``unparseable_marker``: a response containing it gets an unparseable reply (to
    test error handling). ``target_words``: length that counts as full coverage when there are no keywords.
    """

    def __init__(self, *, tie_margin: float = 0.05, target_words: int = 50, unparseable_marker: str | None = None,
                 templates: JudgeTemplates | None = None, name: str = "deterministic") -> None:
        self.name = name
        self.tie_margin = tie_margin
        self.target_words = target_words
        self.unparseable_marker = unparseable_marker
        self.templates = templates or JudgeTemplates()

    def _garbled(self, *texts: str) -> bool:
        return self.unparseable_marker is not None and any(self.unparseable_marker in t for t in texts)

    def _label(self, template) -> str:
        return f"{self.name} [{template.name}@{template.version}]"

    def grade(self, requests: Sequence[GradeRequest]) -> list[GradeResult]:
        template = self.templates.grade
        results = []
        for req in requests:
            rendered = template.render(**grade_placeholders(req))
            wanted = keywords(f"{req.description} {req.reference or ''}")
            share = coverage(req.response, wanted, self.target_words)
            score = req.scale_min + (req.scale_max - req.scale_min) * share
            reply = "Score: ?" if self._garbled(req.response) else f"Score: {score:.6g}\nConfidence: 1"
            parsed = parse_grade_reply(reply, req.scale_min, req.scale_max)
            results.append(GradeResult(request_id=req.request_id, judge=self._label(template), rendered_prompt=rendered,
                                       raw_reply=reply, verdict=parsed.verdict, confidence=parsed.confidence,
                                       error=parsed.error))
        return results

    def compare(self, requests: Sequence[PairRequest]) -> list[PairVerdict]:
        template = self.templates.compare
        results = []
        for req in requests:
            rendered = template.render(**pair_placeholders(req))
            wanted = keywords(req.criterion or req.prompt)
            diff = coverage(req.response_a, wanted, self.target_words) - coverage(
                req.response_b, wanted, self.target_words)
            if self._garbled(req.response_a, req.response_b):
                reply = "Both have merits."
            elif abs(diff) <= self.tie_margin:
                reply = "Verdict: tie"
            else:
                strength = 3 if abs(diff) >= 0.4 else 2 if abs(diff) >= 0.2 else 1
                reply = f"Verdict: {'A' if diff > 0 else 'B'}\nStrength: {strength}"
            parsed = parse_pair_reply(reply)
            results.append(PairVerdict(request_id=req.request_id, judge=self._label(template), rendered_prompt=rendered,
                                       raw_reply=reply, verdict=parsed.verdict, strength=parsed.strength,
                                       confidence=parsed.confidence, error=parsed.error))
        return results

    def rank(self, requests: Sequence[RankRequest]) -> list[RankingResult]:
        template = self.templates.rank
        results = []
        for req in requests:
            rendered = template.render(**rank_placeholders(req))
            wanted = keywords(req.criterion or req.prompt)
            shares = [coverage(text, wanted, self.target_words) for text in req.responses]
            order = sorted(range(len(shares)), key=lambda i: (-shares[i], i))
            if self._garbled(*req.responses):
                reply = "Ranking: they are all good"
            else:
                reply = "Ranking: " + " > ".join(str(i + 1) for i in order)
            parsed = parse_rank_reply(reply, len(req.responses))
            results.append(RankingResult(request_id=req.request_id, judge=self._label(template),
                                         rendered_prompt=rendered, raw_reply=reply, verdict=parsed.verdict,
                                         confidence=parsed.confidence, error=parsed.error))
        return results


class CannedReplyJudge(PromptedJudge):
    """A prompted judge whose replies come from ``reply(rendered_prompt)``; it may return an exception."""

    def __init__(self, reply: Callable[[str], "str | BaseException"], *, templates: JudgeTemplates | None = None,
                 name: str = "canned") -> None:
        super().__init__(templates=templates, name=name)
        self._reply = reply

    def complete(self, prompts: Sequence[str]) -> list["str | BaseException"]:
        return [self._reply(p) for p in prompts]
