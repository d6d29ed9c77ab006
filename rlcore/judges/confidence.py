"""A judge's confidence from the log-probabilities of the token that states its verdict.

Every backend that returns token log-probabilities (an OpenAI-compatible server's ``logprobs`` with
``top_logprobs``, or a local model through :func:`rlcore.judges.local_hf.generate_with_logprobs`) hands
them over as :class:`TokenLogprob` objects; this module finds the verdict token in the reply and turns
the probabilities of its alternatives into a confidence. Only the alternatives that are valid answers
count, renormalised among themselves:

    confidence = p(verdict) / sum of p(every valid label among the alternatives)

A model that writes "B" with p = 0.6 while "A" had 0.2 and "The" 0.2 is 0.75 sure of B, not 0.6: "The"
is no answer. A verdict token that is not a label gives no confidence (None), never a guess.

>>> verdict = TokenLogprob(token=" B", logprob=math.log(0.6), top=[
...     TokenAlternative(token=" A", logprob=math.log(0.2)), TokenAlternative(token=" The", logprob=math.log(0.2))])
>>> tokens = [TokenLogprob(token="Verdict:", logprob=0.0), verdict]
>>> {label: round(p, 2) for label, p in pair_confidence(tokens, "B").items()}
{'A': 0.25, 'B': 0.75, 'tie': 0.0}
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field


class TokenAlternative(BaseModel):
    """One candidate token at a generated position, with its log-probability."""

    model_config = ConfigDict(frozen=True)

    token: str = Field(description="the token's text")
    logprob: float = Field(description="natural-log probability of this token at this position")


class TokenLogprob(BaseModel):
    """One generated token, its log-probability, and the most likely alternatives at its position."""

    model_config = ConfigDict(frozen=True)

    token: str = Field(description="the generated token's text")
    logprob: float = Field(description="natural-log probability of the generated token")
    top: list[TokenAlternative] = Field(default_factory=list, description="most likely tokens here, best first")


PAIR_LABELS: dict[str, str] = {"A": "A", "B": "B", "TIE": "tie", "C": "tie"}


def normalise_token(token: str) -> str:
    """A token's text without spacing, markup and punctuation around it, upper-cased.

    >>> normalise_token(" [[a]]"), normalise_token("**Tie**"), normalise_token(" 4.")
    ('A', 'TIE', '4')
    """
    return token.strip(" \t\r\n*[]()`'\"_:.,;!").upper()


def token_at(tokens: Sequence[TokenLogprob], char_index: int) -> TokenLogprob | None:
    """The token whose text covers ``char_index`` of the concatenated token texts.

    >>> tokens = [TokenLogprob(token="Verdict", logprob=-0.1), TokenLogprob(token=":", logprob=0.0),
    ...           TokenLogprob(token=" B", logprob=-0.2)]
    >>> token_at(tokens, 9).token, token_at(tokens, 11)
    (' B', None)
    """
    position = 0
    for token in tokens:
        if position <= char_index < position + len(token.token):
            return token
        position += len(token.token)
    return None


def verdict_probabilities(token: TokenLogprob, labels: dict[str, str]) -> dict[str, float] | None:
    """Probabilities of the verdict labels at the verdict token, renormalised over the labels present.

    ``labels`` maps a normalised token text to the label it means (``PAIR_LABELS``: A, B, tie). The
    generated token and its top alternatives that mean a label are summed per label (each distinct
    token once) and divided by their total; labels absent from the alternatives get 0. None when the
    token itself is no label.

    >>> verdict = TokenLogprob(token=" A", logprob=math.log(0.6), top=[
    ...     TokenAlternative(token=" A", logprob=math.log(0.6)), TokenAlternative(token=" B", logprob=math.log(0.2)),
    ...     TokenAlternative(token=" The", logprob=math.log(0.2))])
    >>> {k: round(v, 3) for k, v in verdict_probabilities(verdict, PAIR_LABELS).items()}
    {'A': 0.75, 'B': 0.25, 'tie': 0.0}

    Two spellings of one label add up (" A" 0.5 and "A" 0.2 are 0.7 of A, against B's 0.1):

    >>> spelled = TokenLogprob(token=" A", logprob=math.log(0.5), top=[
    ...     TokenAlternative(token="A", logprob=math.log(0.2)), TokenAlternative(token=" B", logprob=math.log(0.1))])
    >>> round(verdict_probabilities(spelled, PAIR_LABELS)["A"], 3)
    0.875
    >>> verdict_probabilities(TokenLogprob(token=" The", logprob=-0.1), PAIR_LABELS) is None
    True
    """
    if normalise_token(token.token) not in labels:
        return None
    mass: dict[str, float] = dict.fromkeys(dict.fromkeys(labels.values()), 0.0)
    seen: set[str] = set()
    for alternative in [TokenAlternative(token=token.token, logprob=token.logprob), *token.top]:
        label = labels.get(normalise_token(alternative.token))
        if label is None or alternative.token in seen:
            continue
        seen.add(alternative.token)
        mass[label] += math.exp(alternative.logprob)
    total = sum(mass.values())
    return {label: value / total for label, value in mass.items()} if total > 0 else None


_PAIR_VERDICT = re.compile(r"(?<![A-Za-z])(A|B|C|[Tt]ie|TIE)(?![A-Za-z])")
_SCORE_VALUE = re.compile(r"(?im)^\W*score\W*[:=]\s*\**\s*([-+]?\d+(?:\.\d+)?)")
_RANK_VALUE = re.compile(r"(?im)^\W*ranking\W*[:=]\s*\W*([A-Za-z\d])")


def pair_confidence(tokens: Sequence[TokenLogprob], verdict: str) -> dict[str, float] | None:
    """Label probabilities at the last token in the reply that states ``verdict`` ('A', 'B' or 'tie').

    >>> tokens = [TokenLogprob(token="Verdict:", logprob=0.0), TokenLogprob(token=" B", logprob=math.log(0.9),
    ...           top=[TokenAlternative(token=" A", logprob=math.log(0.1))])]
    >>> round(pair_confidence(tokens, "B")["B"], 2), pair_confidence(tokens, "A")
    (0.9, None)
    """
    text = "".join(t.token for t in tokens)
    for match in reversed(list(_PAIR_VERDICT.finditer(text))):
        if PAIR_LABELS[match.group(1).upper()] == verdict:
            token = token_at(tokens, match.start())
            return verdict_probabilities(token, PAIR_LABELS) if token else None
    return None


def _value_token(tokens: Sequence[TokenLogprob], line: re.Pattern) -> TokenLogprob | None:
    """The token where the value of the reply's last ``line`` (a ``Score:`` or ``Ranking:`` line) starts."""
    matches = list(line.finditer("".join(t.token for t in tokens)))
    return token_at(tokens, matches[-1].start(1)) if matches else None


def grade_confidence(tokens: Sequence[TokenLogprob], scale_min: float, scale_max: float) -> float | None:
    """Probability of the first token of the ``Score:`` value among alternatives that are numbers on the scale.

    "4" at 0.5 against "3" at 0.3 ("x" is no score) on a 1-5 scale: 0.5 / 0.8.

    >>> tokens = [TokenLogprob(token="Score: ", logprob=0.0), TokenLogprob(token="4", logprob=math.log(0.5),
    ...           top=[TokenAlternative(token="3", logprob=math.log(0.3)), TokenAlternative(token="x", logprob=-1)])]
    >>> round(grade_confidence(tokens, 1, 5), 3)
    0.625

    On a 1-3 scale "4" is off the scale, so no confidence:

    >>> grade_confidence(tokens, 1, 3) is None
    True
    """
    token = _value_token(tokens, _SCORE_VALUE)
    if token is None:
        return None
    low, high = min(scale_min, scale_max), max(scale_min, scale_max)
    labels = {}
    for alternative in [token, *token.top]:
        key = normalise_token(alternative.token)
        try:
            if low <= float(key) <= high:
                labels[key] = key
        except ValueError:
            continue
    probabilities = verdict_probabilities(token, labels)
    return probabilities[normalise_token(token.token)] if probabilities else None


def rank_confidence(tokens: Sequence[TokenLogprob], n: int) -> float | None:
    """Probability of the response put first in the ``Ranking:`` line among the n valid response numbers.

    A response is named by its number (1..n) or its letter (A.. for 1..); both spellings of one
    response add up. "2" at 0.6, "B" (also response 2) at 0.1, "1" at 0.2 and "5" (no response of 3) at 0.1:

    >>> first = TokenLogprob(token="2", logprob=math.log(0.6), top=[
    ...     TokenAlternative(token="B", logprob=math.log(0.1)), TokenAlternative(token="1", logprob=math.log(0.2)),
    ...     TokenAlternative(token="5", logprob=math.log(0.1))])
    >>> round(rank_confidence([TokenLogprob(token="Ranking: ", logprob=0.0), first], 3), 3)
    0.778
    """
    token = _value_token(tokens, _RANK_VALUE)
    if token is None:
        return None
    labels = {str(k): str(k) for k in range(1, n + 1)} | {chr(ord("A") + k): str(k + 1) for k in range(n)}
    probabilities = verdict_probabilities(token, labels)
    return probabilities.get(labels.get(normalise_token(token.token), ""), None) if probabilities else None


__all__ = [
    "PAIR_LABELS",
    "TokenAlternative",
    "TokenLogprob",
    "grade_confidence",
    "normalise_token",
    "pair_confidence",
    "rank_confidence",
    "token_at",
    "verdict_probabilities",
]
