"""Reward analysis on exported files: compare reward functions, evaluate reward models, audit labels
with an ensemble, and model raters. Pure numpy/scipy; no Django. Each entry point returns a pydantic
result model that carries the counts each figure rests on, so a page can show them beside it.

- ``inputs``: score tables (one per source: prompt id, response id, score) and labelled pairs, read
  from JSONL with errors naming the file and line; ``align_sources`` refuses sources scored on
  different response sets.
- ``starc``: STARC distances (single-turn reduction), per-prompt rank correlation, agreement with
  human labels, and the drill-down (the response pairs two sources order most differently).
- ``evaluation``: accuracy with Wilson interval and pair count per group; a reliability diagram.
- ``audit``: the ensemble label audit of "Secrets of RLHF Part II" (mean/std of reward differences).
- ``raters``: Dawid-Skene (1979) rater model and gold-item scoring.
- ``overoptimization``: proxy and gold reward against sqrt(KL) per checkpoint (Gao et al. 2022).
- ``cli``: ``python -m rlcore analysis starc|audit|raters|evaluate|overopt``.

docs/analysis.md gives every formula.
"""

import importlib

# names -> modules, imported on first use: ``python -m rlcore --help`` loads this package and must not
# pull numpy/scipy in (scipy probes for torch, which a web-only machine may not have)
_EXPORTS = {
    "EnsembleAudit": "audit", "audit_labels": "audit", "audit_from_scores": "audit",
    "EvaluatedPair": "evaluation", "RewardModelEvaluation": "evaluation", "evaluate_pairs": "evaluation",
    "evaluate_source": "evaluation",
    "LabelledPair": "inputs", "ScoreTable": "inputs", "align_sources": "inputs",
    "DawidSkeneFit": "raters", "GoldScores": "raters", "RaterLabel": "raters", "fit_dawid_skene": "raters",
    "score_gold": "raters",
    "RewardComparison": "starc", "compare_sources": "starc", "drill_down": "starc",
    "starc_distance_matrix": "starc",
    "OveroptimizationReport": "overoptimization", "SampleScore": "overoptimization",
    "analyse_overoptimization": "overoptimization",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"rlcore.analysis.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'rlcore.analysis' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
