"""The judge interface: one Protocol for the three ways a language model (or a person's proxy) judges.

- **grade**: score one response on one rubric criterion, on the criterion's scale;
- **compare**: say which of two responses is better (``"A"``, ``"B"`` or ``"tie"``) and how strongly
  (1 slight, 2 clear, 3 decisive);
- **rank**: order N responses to one prompt, best first.

Every method takes a batch of requests and returns one result per request, in the same order. A result
always carries the prompt that was rendered for the judge and the raw reply it gave, so a person can audit
it. When a reply cannot be parsed, the result has ``verdict=None`` and ``error`` says why: a label is never
invented.

Backends that talk to a text model (an OpenAI-compatible server, a local Hugging Face model) only need to
subclass :class:`PromptedJudge` and implement ``complete(prompts) -> list[str | BaseException]``; rendering
with the templates of :mod:`rlcore.judges.prompts` and parsing the replies is done here.

>>> req = PairRequest(prompt="2+2?", response_a="4", response_b="5")
>>> req.request_id is None, req.criterion
(True, None)
>>> PairVerdict(request_id=None, judge="x", rendered_prompt="p", raw_reply="???", verdict=None,
...             error="no verdict found").ok
False
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # prompts imports this module; the annotation needs it only for type checkers
    from rlcore.judges.prompts import JudgeTemplates

PairWinner = Literal["A", "B", "tie"]
JudgeMode = Literal["grade", "compare", "rank", "steps"]


# ---------------------------------------------------------------- requests


class GradeRequest(BaseModel):
    """Ask a judge to score one response on one rubric criterion."""

    model_config = ConfigDict(frozen=True)

    request_id: str | None = Field(None, description="caller's id, copied into the result (e.g. row/criterion)")
    prompt: str = Field(description="the prompt the response answers")
    response: str = Field(description="the response to grade")
    criterion: str = Field(description="name of the rubric criterion being graded")
    description: str = Field("", description="what the criterion asks for, in the rubric author's words")
    scale_min: float = Field(0.0, description="lowest score the judge may give")
    scale_max: float = Field(1.0, description="highest score the judge may give")
    reference: str | None = Field(None, description="a reference answer, when the dataset has one")


class StepGradeRequest(BaseModel):
    """Ask a judge to grade one step of a response, with the prompt and the earlier steps as its context."""

    model_config = ConfigDict(frozen=True)

    request_id: str | None = Field(None, description="caller's id, copied into the result (e.g. item:step)")
    prompt: str = Field(description="the prompt the response answers")
    steps: list[str] = Field(min_length=1, description="every step of the response, in order")
    index: int = Field(ge=0, description="0-based index of the step to grade; the steps before it are context")
    scale_min: float = Field(-1.0, description="lowest grade (ternary: -1 bad)")
    scale_max: float = Field(1.0, description="highest grade (ternary: 1 good)")


class PairRequest(BaseModel):
    """Ask a judge which of two responses to the same prompt is better."""

    model_config = ConfigDict(frozen=True)

    request_id: str | None = Field(None, description="caller's id, copied into the result")
    prompt: str = Field(description="the prompt both responses answer")
    response_a: str = Field(description="the response shown first, labelled A")
    response_b: str = Field(description="the response shown second, labelled B")
    criterion: str | None = Field(None, description="what 'better' means here (a rubric text); None: overall")


class RankRequest(BaseModel):
    """Ask a judge to order several responses to the same prompt, best first."""

    model_config = ConfigDict(frozen=True)

    request_id: str | None = Field(None, description="caller's id, copied into the result")
    prompt: str = Field(description="the prompt all responses answer")
    responses: list[str] = Field(min_length=2, description="the responses, shown numbered from 1 in this order")
    criterion: str | None = Field(None, description="what 'better' means here (a rubric text); None: overall")


# ---------------------------------------------------------------- results


class JudgeResult(BaseModel):
    """What every judgement carries, whatever the mode."""

    model_config = ConfigDict(frozen=True)

    request_id: str | None = Field(description="the request's id, unchanged")
    judge: str = Field(description="which judge produced this (backend and model name, template version)")
    rendered_prompt: str = Field(description="the exact text sent to the judge")
    raw_reply: str | None = Field(description="the judge's reply verbatim; None when the call itself failed")
    confidence: float | None = Field(None, ge=0.0, le=1.0, description="judge's confidence in [0, 1], if known")
    error: str | None = Field(None, description="why there is no verdict (unparseable reply, backend failure)")

    @property
    def ok(self) -> bool:
        """True when the judge produced a usable verdict."""
        return self.error is None and getattr(self, "verdict", None) is not None


class GradeResult(JudgeResult):
    """A criterion score, or None with ``error`` set."""

    verdict: float | None = Field(description="the score on the request's scale; None when unparseable")


class PairVerdict(JudgeResult):
    """Which response won, and how strongly."""

    verdict: PairWinner | None = Field(description="'A', 'B' or 'tie'; None when unparseable")
    strength: int | None = Field(None, ge=1, le=3, description="1 slight, 2 clear, 3 decisive; None for a tie")


class RankingResult(JudgeResult):
    """An ordering of the request's responses."""

    verdict: list[int] | None = Field(
        description="0-based indices into the request's responses, best first (a permutation); None when unparseable"
    )


# ---------------------------------------------------------------- the protocol


@runtime_checkable
class Judge(Protocol):
    """Anything that can grade, compare and rank in batches. One result per request, same order."""

    name: str

    def grade(self, requests: Sequence[GradeRequest]) -> list[GradeResult]: ...

    def compare(self, requests: Sequence[PairRequest]) -> list[PairVerdict]: ...

    def rank(self, requests: Sequence[RankRequest]) -> list[RankingResult]: ...


class PromptedJudge(ABC):
    """A judge backed by a text model: render each request with a template, complete, parse the reply.

    Subclasses implement :meth:`complete`. A failed call for one prompt is returned as an exception in that
    slot; it becomes a result with ``raw_reply=None`` and ``error`` set, and the rest of the batch stands.
    """

    name: str = "prompted"

    def __init__(self, templates: JudgeTemplates | None = None, name: str | None = None) -> None:
        from rlcore.judges.prompts import JudgeTemplates

        self.templates = templates or JudgeTemplates()
        if name is not None:
            self.name = name

    @abstractmethod
    def complete(self, prompts: Sequence[str]) -> list["str | BaseException"]:
        """Return the model's reply to each prompt, or the exception that prevented it."""

    @property
    def judge_label(self) -> str:
        return self.name

    def grade(self, requests: Sequence[GradeRequest]) -> list[GradeResult]:
        from rlcore.judges.prompts import grade_placeholders

        return self._grade_with(self.templates.grade, grade_placeholders, requests)

    def grade_steps(self, requests: Sequence[StepGradeRequest]) -> list[GradeResult]:
        """Grade each step with the ``steps`` template; the reply is read like a rubric grade (``Score: x``)."""
        from rlcore.judges.prompts import step_placeholders

        return self._grade_with(self.templates.steps, step_placeholders, requests)

    def _grade_with(self, template, placeholders, requests) -> list[GradeResult]:
        """Render each request with ``template``, ask the model, read each reply as a grade on its scale."""
        from rlcore.judges.prompts import parse_grade_reply

        rendered = [template.render(**placeholders(r)) for r in requests]
        replies = self.complete(rendered)
        _check_count(replies, rendered)
        results = []
        for req, text, reply in zip(requests, rendered, replies):
            if isinstance(reply, BaseException):
                results.append(GradeResult(request_id=req.request_id, judge=self._label(template), rendered_prompt=text,
                                           raw_reply=None, verdict=None, error=f"judge call failed: {reply}"))
                continue
            parsed = parse_grade_reply(reply, req.scale_min, req.scale_max)
            results.append(GradeResult(request_id=req.request_id, judge=self._label(template), rendered_prompt=text,
                                       raw_reply=reply, verdict=parsed.verdict, confidence=parsed.confidence,
                                       error=parsed.error))
        return results

    def compare(self, requests: Sequence[PairRequest]) -> list[PairVerdict]:
        from rlcore.judges.prompts import pair_placeholders, parse_pair_reply

        template = self.templates.compare
        rendered = [template.render(**pair_placeholders(r)) for r in requests]
        replies = self.complete(rendered)
        _check_count(replies, rendered)
        results = []
        for req, text, reply in zip(requests, rendered, replies):
            if isinstance(reply, BaseException):
                results.append(PairVerdict(request_id=req.request_id, judge=self._label(template), rendered_prompt=text,
                                           raw_reply=None, verdict=None, error=f"judge call failed: {reply}"))
                continue
            parsed = parse_pair_reply(reply)
            results.append(PairVerdict(request_id=req.request_id, judge=self._label(template), rendered_prompt=text,
                                       raw_reply=reply, verdict=parsed.verdict, strength=parsed.strength,
                                       confidence=parsed.confidence, error=parsed.error))
        return results

    def rank(self, requests: Sequence[RankRequest]) -> list[RankingResult]:
        from rlcore.judges.prompts import parse_rank_reply, rank_placeholders

        template = self.templates.rank
        rendered = [template.render(**rank_placeholders(r)) for r in requests]
        replies = self.complete(rendered)
        _check_count(replies, rendered)
        results = []
        for req, text, reply in zip(requests, rendered, replies):
            if isinstance(reply, BaseException):
                results.append(RankingResult(request_id=req.request_id, judge=self._label(template),
                                             rendered_prompt=text, raw_reply=None, verdict=None,
                                             error=f"judge call failed: {reply}"))
                continue
            parsed = parse_rank_reply(reply, len(req.responses))
            results.append(RankingResult(request_id=req.request_id, judge=self._label(template), rendered_prompt=text,
                                         raw_reply=reply, verdict=parsed.verdict, confidence=parsed.confidence,
                                         error=parsed.error))
        return results

    def _label(self, template) -> str:
        return f"{self.judge_label} [{template.name}@{template.version}]"


def _check_count(replies: Sequence[object], prompts: Sequence[str]) -> None:
    if len(replies) != len(prompts):
        raise RuntimeError(f"judge backend returned {len(replies)} replies for {len(prompts)} prompts")
