"""Fixtures shared by the rlcore training tests: a tiny causal LM and a prompt file, built once per module."""

import pytest

from rlcore.training import tiny_models


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return tiny_models.build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-policy"))


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return tiny_models.write_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", 16)
