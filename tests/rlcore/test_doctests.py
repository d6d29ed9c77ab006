"""Every docstring example in rlcore is a test: the numbers shown are the numbers computed."""

import doctest
import importlib

import pytest

# append your module here
MODULES = [
    "rlcore.agreement",
    "rlcore.routing.features",
    "rlcore.routing.predictor",
    "rlcore.routing.tagging",
    "rlcore.events",
    "rlcore.jsonl",
    "rlcore.judges.base",
    "rlcore.judges.prompts",
    "rlcore.judges.deterministic",
    "rlcore.judges.openai_compat",
    "rlcore.judges.debias",
    "rlcore.judges.outcomes",
    "rlcore.judges.testing_server",
    "rlcore.rules",
    "rlcore.steps",
    "rlcore.rubric",
    "rlcore.rewards.spec",
    "rlcore.rewards.check",
    "rlcore.rewards.combine",
    "rlcore.rewards.engine",
    "rlcore.rewards.trl_adapter",
    "rlcore.training.specs",
    "rlcore.training.mirrors",
    "rlcore.training.snapshot",
    "rlcore.training.presets",
    "rlcore.training.calibration",
    "rlcore.training.runtime",
    "rlcore.training.reward_model",
    "rlcore.training.prm",
    "rlcore.training.reporting",
    "rlcore.training.demo_policy",
    "rlcore.analysis.inputs",
    "rlcore.analysis.starc",
    "rlcore.analysis.evaluation",
    "rlcore.analysis.audit",
    "rlcore.analysis.raters",
    "rlcore.analysis.overoptimization",
]


@pytest.mark.parametrize("module_name", MODULES)
def test_it_runs_the_docstring_examples(module_name):
    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module_name}"
