"""PAR (Preference As Reward, Fu et al. 2025): r = (1/M) sum_m sigmoid(r(x, y) - r(x, y_ref_m)), with the
completion and its references scored by the same components in the same length unit. Expected values are
computed here from the paper's formula, not taken from rlcore."""

import math

import pytest

from rlcore.rewards import RewardSpec, score_rows
from rlcore.rewards.engine import TokenCounter
from rlcore.rewards.trl_adapter import build_reward_funcs
from rlcore.training import tiny_models


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def par_spec(unit: str, **length) -> RewardSpec:
    return RewardSpec(name="par", normalization="par", par_reference_column="reference", components=[
        {"kind": "length_penalty", "name": "overlong", "unit": unit, **length},
        {"kind": "verifier", "name": "correct", "reference_column": "answer", "mode": "numeric", "weight": 2.0}])


def test_it_gives_a_completion_identical_to_its_reference_exactly_one_half():
    """TRL's completion ids (here 7, ending with EOS) and the reference's 4 words once made this 0.378."""
    text = "so it is 4"
    rows = [{"prompt": "2+2?", "completion": text, "completion_ids": [5, 6, 7, 8, 9, 10, 2], "answer": "4",
             "reference": text}]
    [row] = score_rows(par_spec("tokens", max_length=6, cache_length=4), rows)
    assert row.total == 0.5


def test_it_measures_completion_and_reference_with_the_policy_tokenizer_in_training(tmp_path):
    tokenizer = tiny_models.build_tokenizer(tmp_path / "tok")
    text = "w1 w2 w3 w4 question"
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    spec = par_spec("tokens", max_length=n + 2, cache_length=4)
    [total, overlong, correct] = build_reward_funcs(spec, token_counter=TokenCounter(tokenizer))[0]
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id or 0]] * 2
    call = dict(prompts=["q", "q"], completions=[text, text + " w5 w6"], completion_ids=ids,
                answer=["7", "7"], reference=[text, text])
    values = total(**call)
    assert values[0] == 0.5
    # the second completion is 2+ tokens longer, inside the soft zone: penalty -(len - (n - 2)) / 4 by hand
    longer = len(tokenizer(text + " w5 w6", add_special_tokens=False)["input_ids"])
    assert overlong(**call) == [-(n - (n - 2)) / 4, -min(longer - (n - 2), 4) / 4]
    assert values[1] == pytest.approx(sigmoid(-min(longer - (n - 2), 4) / 4 + (n - (n - 2)) / 4))


def test_it_averages_the_sigmoid_over_three_references_by_hand():
    # chars, max 10, soft zone 10: the penalty is -len/10; the verifier (weight 2) applies to every row
    spec = par_spec("chars", max_length=10, cache_length=10)
    rows = [{"prompt": "q", "completion": "x=4", "answer": "4", "reference": ["ab", "x=4444", "answer: 4"]},
            {"prompt": "q", "completion": "x=5", "answer": "4", "reference": ["ab", None, " "]},
            {"prompt": "q", "completion": "x=5", "answer": "4", "reference": []}]
    scored = score_rows(spec, rows)
    r = 2.0 * 1 - 0.3  # correct, 3 chars
    refs = [2.0 * 0 - 0.2, 2.0 * 0 - 0.6, 2.0 * 1 - 0.9]  # "ab" wrong, "x=4444" wrong, "answer: 4" right
    assert scored[0].total == pytest.approx(sum(sigmoid(r - ref) for ref in refs) / 3, abs=1e-12)
    assert scored[1].total == pytest.approx(sigmoid((2.0 * 0 - 0.3) - (2.0 * 0 - 0.2)), abs=1e-12)  # blanks left out
    assert scored[2].total is None  # no reference: no PAR reward
    [total, *_] = build_reward_funcs(spec)[0]
    trl = total(prompts=["q"] * 3, completions=[r_["completion"] for r_ in rows], completion_ids=[[1]] * 3,
                answer=["4"] * 3, reference=[r_["reference"] for r_ in rows])
    assert trl == [s.total for s in scored]


def test_it_wraps_text_references_as_assistant_messages_for_conversational_completions():
    spec = par_spec("words", max_length=6, cache_length=4)
    [total, *_] = build_reward_funcs(spec)[0]
    completion = [{"role": "assistant", "content": "so it is 4"}]
    values = total(prompts=[[{"role": "user", "content": "2+2?"}]], completions=[completion], completion_ids=[[1]],
                   answer=["4"], reference=[["so it is 4", [{"role": "assistant", "content": "so it is 4"}]]])
    assert values == [0.5]
