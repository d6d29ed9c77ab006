"""Judge prompt templates (versioned, editable by users) and the parsers that read judges' replies.

A template is plain text with ``{placeholder}`` fields. Only the placeholders of its mode are allowed;
any other ``{name}`` is a mistake the user must fix, and rendering says which. Braces that are not a
bare identifier (a JSON example such as ``{"score": 3}``) are left as they are; write ``{{`` and ``}}`` for
a literal brace around an identifier.

>>> t = JudgePromptTemplate(name="short", version=2, mode="grade",
...                         text="Rate {response} on {criterion} from {scale_min} to {scale_max}.")
>>> t.render(response="hi", criterion="tone", scale_min=1, scale_max=5)
'Rate hi on tone from 1 to 5.'
>>> JudgePromptTemplate(name="bad", mode="grade", text="{answer}").problems()
["template 'bad' (grade): unknown placeholder {answer}; allowed: criterion, description, prompt, reference, response, scale_max, scale_min"]

Replies are parsed strictly: a verdict is taken only from an explicit line, never guessed.

>>> parse_grade_reply("The answer is clear.\\nScore: 4", 1, 5).verdict
4.0
>>> parse_pair_reply("Verdict: B\\nStrength: 3")
ParsedPair(verdict='B', strength=3, confidence=None, error=None)
>>> parse_rank_reply("Ranking: 2 > 3 > 1", 3).verdict
[1, 2, 0]
>>> parse_grade_reply("I like it", 1, 5).error
'no score found (expected a line "Score: <number>")'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from rlcore.errors import UserError

from rlcore.judges.base import JudgeMode

if TYPE_CHECKING:
    from rlcore.judges.base import GradeRequest, PairRequest, RankRequest, StepGradeRequest

PLACEHOLDERS: dict[str, frozenset[str]] = {
    "grade": frozenset({"prompt", "response", "criterion", "description", "scale_min", "scale_max", "reference"}),
    "compare": frozenset({"prompt", "response_a", "response_b", "criterion"}),
    "rank": frozenset({"prompt", "responses", "n", "criterion"}),
    "steps": frozenset({"prompt", "steps_so_far", "step", "step_number", "n_steps", "scale_min", "scale_max"}),
}

_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


class JudgePromptTemplate(BaseModel):
    """A versioned prompt for one judging mode; what users edit to change how the judge is asked."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the template's name, unique per mode within a project")
    version: int = Field(1, ge=1, description="bumped on every saved edit; results record name@version")
    mode: JudgeMode = Field(description="'grade', 'compare' or 'rank': decides the allowed placeholders")
    text: str = Field(description="the prompt with {placeholder} fields")

    def placeholders(self) -> list[str]:
        """The placeholder names the text uses, in order of first use.

        >>> JudgePromptTemplate(name="t", mode="compare", text="{response_a} vs {response_b} {{x}}").placeholders()
        ['response_a', 'response_b']
        """
        seen: dict[str, None] = {}
        for match in _FIELD.finditer(self.text):
            if match.group(1):
                seen.setdefault(match.group(1))
        return list(seen)

    def problems(self) -> list[str]:
        """Every placeholder that is not allowed in this mode, each as a message naming it."""
        allowed = PLACEHOLDERS[self.mode]
        return [
            f"template {self.name!r} ({self.mode}): unknown placeholder {{{name}}}; allowed: {', '.join(sorted(allowed))}"
            for name in self.placeholders()
            if name not in allowed
        ]

    def render(self, **values: object) -> str:
        """Fill the placeholders; raise UserError naming the first placeholder that has no value."""
        problems = self.problems()
        if problems:
            raise UserError(problems[0])

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name is None:
                return match.group(0)[0]
            if name not in values:
                raise UserError(f"template {self.name!r} ({self.mode}): no value for placeholder {{{name}}}")
            return _text(values[name])

        return _FIELD.sub(fill, self.text)


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


DEFAULT_GRADE = JudgePromptTemplate(
    name="default-grade",
    mode="grade",
    text=(
        "You are grading a response against one criterion of a rubric.\n\n"
        "Criterion: {criterion}\n{description}\n\n"
        "Prompt:\n{prompt}\n\nResponse:\n{response}\n\nReference answer (may be empty):\n{reference}\n\n"
        "Think briefly, then end with exactly one line `Score: <number>` where the number is between "
        "{scale_min} and {scale_max}. Optionally add a line `Confidence: <0 to 1>`."
    ),
)

DEFAULT_COMPARE = JudgePromptTemplate(
    name="default-compare",
    mode="compare",
    text=(
        "Compare two responses to the same prompt.\n\nWhat matters: {criterion}\n\n"
        "Prompt:\n{prompt}\n\n[Response A]\n{response_a}\n\n[Response B]\n{response_b}\n\n"
        "Think briefly, then end with a line `Verdict: A`, `Verdict: B` or `Verdict: tie`, and unless it is a tie "
        "a line `Strength: 1`, `2` or `3` (1 slightly better, 2 clearly better, 3 much better). "
        "Optionally add a line `Confidence: <0 to 1>`."
    ),
)

DEFAULT_RANK = JudgePromptTemplate(
    name="default-rank",
    mode="rank",
    text=(
        "Rank the {n} responses to the prompt from best to worst.\n\nWhat matters: {criterion}\n\n"
        "Prompt:\n{prompt}\n\n{responses}\n\n"
        "Think briefly, then end with one line `Ranking: ` followed by all response numbers, best first, "
        "separated by `>` (for example `Ranking: 2 > 1 > 3`). Optionally add a line `Confidence: <0 to 1>`."
    ),
)


DEFAULT_STEPS = JudgePromptTemplate(
    name="default-steps",
    mode="steps",
    text=(
        "You are checking one step of a step-by-step answer. Judge only this step: is it correct and does it "
        "follow from the prompt and the steps before it?\n\n"
        "Prompt:\n{prompt}\n\nSteps so far:\n{steps_so_far}\n\n"
        "Step {step_number} of {n_steps}:\n{step}\n\n"
        "Think briefly, then end with exactly one line `Score: <number>` between {scale_min} and {scale_max} "
        "(the lowest: the step is wrong; the highest: the step is right). Optionally add a line "
        "`Confidence: <0 to 1>`."
    ),
)


class JudgeTemplates(BaseModel):
    """The templates a judge uses, one per mode."""

    model_config = ConfigDict(frozen=True)

    grade: JudgePromptTemplate = Field(DEFAULT_GRADE, description="template for rubric grading")
    compare: JudgePromptTemplate = Field(DEFAULT_COMPARE, description="template for pairwise preference")
    rank: JudgePromptTemplate = Field(DEFAULT_RANK, description="template for N-way ranking")
    steps: JudgePromptTemplate = Field(DEFAULT_STEPS, description="template for grading one step of a response")

    def problems(self) -> list[str]:
        """Every problem of every template, plus a template filed under the wrong mode."""
        out = []
        for mode in ("grade", "compare", "rank", "steps"):
            template: JudgePromptTemplate = getattr(self, mode)
            if template.mode != mode:
                out.append(f"template {template.name!r} is a {template.mode} template, used for {mode}")
            out.extend(template.problems())
        return out


# ---------------------------------------------------------------- placeholder values per request


def grade_placeholders(request: "GradeRequest") -> dict[str, object]:
    return {
        "prompt": request.prompt,
        "response": request.response,
        "criterion": request.criterion,
        "description": request.description,
        "scale_min": request.scale_min,
        "scale_max": request.scale_max,
        "reference": request.reference or "",
    }


def pair_placeholders(request: "PairRequest") -> dict[str, object]:
    return {
        "prompt": request.prompt,
        "response_a": request.response_a,
        "response_b": request.response_b,
        "criterion": request.criterion or "overall quality and helpfulness",
    }


def step_placeholders(request: "StepGradeRequest") -> dict[str, object]:
    """The step to grade, with the earlier steps numbered as its context ("(none)" for the first step)."""
    earlier = "\n".join(f"{k}. {text}" for k, text in enumerate(request.steps[:request.index], start=1))
    return {
        "prompt": request.prompt,
        "steps_so_far": earlier or "(none)",
        "step": request.steps[request.index],
        "step_number": request.index + 1,
        "n_steps": len(request.steps),
        "scale_min": request.scale_min,
        "scale_max": request.scale_max,
    }


def rank_placeholders(request: "RankRequest") -> dict[str, object]:
    numbered = "\n\n".join(f"[Response {i}]\n{text}" for i, text in enumerate(request.responses, start=1))
    return {
        "prompt": request.prompt,
        "responses": numbered,
        "n": len(request.responses),
        "criterion": request.criterion or "overall quality and helpfulness",
    }


# ---------------------------------------------------------------- reply parsers


@dataclass(frozen=True)
class ParsedGrade:
    verdict: float | None
    confidence: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class ParsedPair:
    verdict: str | None
    strength: int | None = None
    confidence: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class ParsedRank:
    verdict: list[int] | None
    confidence: float | None = None
    error: str | None = None


_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_SCORE_LINE = re.compile(rf"(?im)^\W*score\W*[:=]\s*\**\s*({_NUMBER})\s*(?:/\s*({_NUMBER}))?")
_CONFIDENCE_LINE = re.compile(rf"(?im)^\W*confidence\W*[:=]\s*\**\s*({_NUMBER})\s*(%?)")
_VERDICT_LINE = re.compile(r"(?im)^\W*(?:verdict|winner|preferred|better)\W*[:=]\s*\**\s*\[*\s*(A|B|tie|C)\b")
_BRACKET = re.compile(r"\[\[(A|B|C|tie)\]\]", re.IGNORECASE)
_ARROW = re.compile(r"(?<![\w])(A|B)\s*(>{1,3}|<{1,3}|=)\s*(A|B)(?![\w])")
_STRENGTH_LINE = re.compile(r"(?im)^\W*strength\W*[:=]\s*\**\s*(\d+)")
_RANK_LINE = re.compile(r"(?im)^\W*ranking\W*[:=]\s*(.+)$")


def _json_object(text: str) -> dict | None:
    """The last {...} in the reply that parses as a JSON object, if any."""
    for match in reversed(list(re.finditer(r"\{[^{}]*\}", text))):
        try:
            value = json.loads(match.group(0))
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_confidence(text: str) -> float | None:
    """A ``Confidence:`` line as a number in [0, 1] (percentages accepted); None if absent or out of range.

    >>> parse_confidence("Score: 3\\nConfidence: 80%"), parse_confidence("Confidence: 0.25"), parse_confidence("")
    (0.8, 0.25, None)
    """
    matches = _CONFIDENCE_LINE.findall(text)
    if not matches:
        return None
    number, percent = matches[-1]
    value = float(number) / (100.0 if percent else 1.0)
    return value if 0.0 <= value <= 1.0 else None


def parse_grade_reply(text: str, scale_min: float, scale_max: float) -> ParsedGrade:
    """Read the last ``Score: x`` line (or a JSON ``{"score": x}``); reject scores outside the scale.

    >>> parse_grade_reply('{"score": 0.5, "confidence": 0.9}', 0, 1)
    ParsedGrade(verdict=0.5, confidence=0.9, error=None)
    >>> parse_grade_reply("Score: 7", 1, 5).error
    'score 7.0 is outside the scale 1..5'
    >>> parse_grade_reply("3", 1, 5).verdict
    3.0
    """
    score: float | None = None
    confidence = parse_confidence(text)
    obj = _json_object(text) if "{" in text else None
    if obj is not None and confidence is None:
        conf = obj.get("confidence")
        if isinstance(conf, (int, float)) and not isinstance(conf, bool) and 0 <= conf <= 1:
            confidence = float(conf)
    lines = _SCORE_LINE.findall(text)
    if lines:
        score = float(lines[-1][0])
    elif obj is not None and isinstance(obj.get("score"), (int, float)) and not isinstance(obj["score"], bool):
        score = float(obj["score"])
    elif re.fullmatch(rf"\s*{_NUMBER}\s*", text):
        score = float(text)
    if score is None:
        return ParsedGrade(None, confidence, 'no score found (expected a line "Score: <number>")')
    if not (min(scale_min, scale_max) <= score <= max(scale_min, scale_max)):
        return ParsedGrade(None, confidence, f"score {score} is outside the scale {_text(scale_min)}..{_text(scale_max)}")
    return ParsedGrade(score, confidence)


def parse_pair_reply(text: str) -> ParsedPair:
    """Read a pairwise verdict: ``Verdict: A|B|tie`` (+ ``Strength: 1..3``), ``[[A]]``, ``A>>B`` or JSON.

    A missing strength for a winner is left None (not guessed); ``A>B`` / ``A>>B`` / ``A>>>B`` give 1 / 2 / 3.

    >>> parse_pair_reply("After reading both, [[A]]")
    ParsedPair(verdict='A', strength=None, confidence=None, error=None)
    >>> parse_pair_reply("B>>A").verdict, parse_pair_reply("B>>A").strength
    ('B', 2)
    >>> parse_pair_reply('{"winner": "tie"}').verdict
    'tie'
    >>> parse_pair_reply("Both are fine").error
    'no verdict found (expected a line "Verdict: A", "Verdict: B" or "Verdict: tie")'
    >>> parse_pair_reply("Verdict: A\\nStrength: 9").error
    'strength 9 is outside 1..3'
    """
    confidence = parse_confidence(text)
    verdict: str | None = None
    strength: int | None = None
    lines = _VERDICT_LINE.findall(text)
    if lines:
        verdict = _winner(lines[-1])
    elif brackets := _BRACKET.findall(text):
        verdict = _winner(brackets[-1])
    elif arrows := _ARROW.findall(text):
        left, op, right = arrows[-1]
        if left == right:
            return ParsedPair(None, None, confidence, f"comparison {left}{op}{right} compares a response with itself")
        if op == "=":
            verdict = "tie"
        else:
            verdict = left if op[0] == ">" else right
            strength = len(op)
    else:
        obj = _json_object(text)
        if obj is not None:
            raw = obj.get("winner", obj.get("verdict"))
            if isinstance(raw, str) and raw.strip().upper() in ("A", "B", "TIE", "C"):
                verdict = _winner(raw.strip())
            raw_strength = obj.get("strength")
            if isinstance(raw_strength, int) and not isinstance(raw_strength, bool):
                strength = raw_strength
            conf = obj.get("confidence")
            if isinstance(conf, (int, float)) and 0 <= conf <= 1:
                confidence = float(conf)
    if verdict is None:
        return ParsedPair(None, None, confidence,
                          'no verdict found (expected a line "Verdict: A", "Verdict: B" or "Verdict: tie")')
    if strength is None and (found := _STRENGTH_LINE.findall(text)):
        strength = int(found[-1])
    if verdict == "tie":
        strength = None
    elif strength is not None and not 1 <= strength <= 3:
        return ParsedPair(None, None, confidence, f"strength {strength} is outside 1..3")
    return ParsedPair(verdict, strength, confidence)


def _winner(token: str) -> str:
    token = token.strip()
    if token.upper() in ("TIE", "C"):
        return "tie"
    return token.upper()


def parse_rank_reply(text: str, n: int) -> ParsedRank:
    """Read ``Ranking: 2 > 1 > 3`` (1-based numbers, or letters A, B, C...) into 0-based indices, best first.

    The ranking must name every response exactly once.

    >>> parse_rank_reply("Ranking: B > A", 2).verdict
    [1, 0]
    >>> parse_rank_reply("Ranking: 1 > 1 > 2", 3).error
    'ranking must list each of the 3 responses exactly once, got [1, 1, 2]'
    >>> parse_rank_reply("[3, 1, 2]", 3).verdict
    [2, 0, 1]
    """
    confidence = parse_confidence(text)
    lines = _RANK_LINE.findall(text)
    if lines:
        body = lines[-1]
    else:
        lists = re.findall(r"\[([\s\dA-Za-z,>]+)\]", text)
        if not lists:
            return ParsedRank(None, confidence, 'no ranking found (expected a line "Ranking: 2 > 1 > 3")')
        body = lists[-1]
    tokens = [t for t in re.split(r"[\s,>]+", body.strip().strip("`*.").strip()) if t]
    numbers: list[int] = []
    for token in tokens:
        if token.isdigit():
            numbers.append(int(token))
        elif len(token) == 1 and token.isalpha():
            numbers.append(ord(token.upper()) - ord("A") + 1)
        else:
            return ParsedRank(None, confidence, f"ranking has an entry {token!r} that is not a response number")
    if sorted(numbers) != list(range(1, n + 1)):
        return ParsedRank(None, confidence, f"ranking must list each of the {n} responses exactly once, got {numbers}")
    return ParsedRank([k - 1 for k in numbers], confidence)
