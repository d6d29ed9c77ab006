"""LM judges: the interface (``base``), prompt templates and reply parsers (``prompts``), and a
deterministic local judge for tests (``deterministic``). Model-backed backends live beside them."""

from rlcore.judges.base import (
    GradeRequest,
    GradeResult,
    Judge,
    JudgeResult,
    PairRequest,
    PairVerdict,
    PromptedJudge,
    RankingResult,
    RankRequest,
)
from rlcore.judges.prompts import JudgePromptTemplate, JudgeTemplates

__all__ = [
    "GradeRequest",
    "GradeResult",
    "Judge",
    "JudgePromptTemplate",
    "JudgeResult",
    "JudgeTemplates",
    "PairRequest",
    "PairVerdict",
    "PromptedJudge",
    "RankRequest",
    "RankingResult",
]
