"""The demo rubric and reward spec that ``manage.py seed_demo`` adds to the demo project (idempotent)."""

from __future__ import annotations

from webapp.rubrics import services
from webapp.rubrics.models import RewardSpec, Rubric

DEMO_RUBRIC = {
    "name": "Helpful answer",
    "description": "A helpful assistant answer: polite, to the point, no made-up links.",
    "aggregation": "weighted_mean",
    "criteria": [
        {"name": "addresses_user", "description": "Speaks to the user directly and politely.", "weight": 1,
         "rule": {"kind": "regex", "pattern": r"\b(you|your|please|thanks?)\b", "ignore_case": True}},
        {"name": "concise", "description": "At most 120 words.", "weight": 2,
         "rule": {"kind": "length", "max": 120, "unit": "words"}},
        {"name": "no_urls", "description": "No links (they are often made up).", "weight": 1, "critical": True,
         "veto_cap": 0.2, "rule": {"kind": "format", "check": "no_urls"}},
        {"name": "correct", "description": "The answer is factually correct and complete.", "weight": 3,
         "scale_min": 1, "scale_max": 5},
    ],
}

DEMO_SPEC = {
    "name": "helpful-grpo",
    "description": "Rubric rules plus a soft overlong penalty, z-scored within each prompt's group.",
    "normalization": "group_zscore",
    "components": [
        {"kind": "rubric_rules", "name": "helpful", "rubric_path": "rubric://Helpful answer", "weight": 1.0},
        {"kind": "length_penalty", "name": "overlong", "max_length": 256, "cache_length": 64, "unit": "words",
         "weight": 0.5},
    ],
}


def seed_demo_rubrics(*, project, user) -> None:
    if not Rubric.objects.filter(project=project, name__iexact=DEMO_RUBRIC["name"]).exists():
        services.rubric_create(project=project, user=user, name=DEMO_RUBRIC["name"], definition=DEMO_RUBRIC,
                               note="demo", use_for_annotation=True)
    if not RewardSpec.objects.filter(project=project, name__iexact=DEMO_SPEC["name"]).exists():
        services.reward_spec_create(project=project, user=user, name=DEMO_SPEC["name"], definition=DEMO_SPEC,
                                    note="demo")
