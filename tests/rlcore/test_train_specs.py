"""Training contracts and inputs, checked without training anything."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlcore.errors import UserError
from rlcore.training.calibration import ensemble_margins, expected_calibration_error, pair_metrics
from rlcore.training.presets import grpo_preset
from rlcore.training.runtime import is_out_of_memory, out_of_memory_message, resolve_model_source
from rlcore.training.snapshot import preference_rows, prompt_rows, split_held_out
from rlcore.training.specs import GRPOTrainSpec, RewardModelTrainSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]
LENGTH_REWARD = {"name": "short", "components": [
    {"kind": "length_penalty", "name": "overlong", "max_length": 64, "cache_length": 16}]}


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _pairs(n: int) -> list[dict]:
    return [{"prompt": f"q{i}", "chosen": f" good {i}", "rejected": f" bad {i}", "margin": 0.5} for i in range(n)]


def test_it_loads_a_yaml_spec_with_defaults(tmp_path):
    path = tmp_path / "rm.yaml"
    path.write_text("backbone: some/model\npreference_snapshot: labels.jsonl\noutput_dir: out\nensemble_size: 3\n")
    spec = load_spec(path, "reward_model")
    assert isinstance(spec, RewardModelTrainSpec)
    assert spec.ensemble_size == 3 and spec.device == "auto" and spec.resume is False


def test_it_names_the_file_and_field_of_a_bad_spec(tmp_path):
    path = tmp_path / "rm.json"
    path.write_text(json.dumps({"backbone": "m", "preference_snapshot": "p.jsonl", "output_dir": "o",
                                "learning_rate": -1}))
    with pytest.raises(UserError, match=r"rm\.json: field 'learning_rate': Input should be greater than 0"):
        load_spec(path, "reward_model")


def test_it_rejects_unknown_spec_fields(tmp_path):
    path = tmp_path / "rm.json"
    path.write_text(json.dumps({"backbone": "m", "preference_snapshot": "p.jsonl", "output_dir": "o", "lr": 1}))
    with pytest.raises(UserError, match="field 'lr': Extra inputs are not permitted"):
        load_spec(path, "reward_model")


def test_it_rejects_a_spec_of_the_other_kind(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"kind": "grpo"}))
    with pytest.raises(UserError, match="this is a 'grpo' spec, expected 'reward_model'"):
        load_spec(path, "reward_model")


def test_it_requires_generation_batches_of_whole_groups():
    with pytest.raises(ValueError, match="multiple of num_generations"):
        GRPOTrainSpec(output_dir="o", policy="p", prompt_snapshot="s.jsonl", reward_spec=LENGTH_REWARD,
                      preset="grpo", per_device_train_batch_size=6, num_generations=4)


def test_it_maps_presets_to_trl_loss_settings():
    assert grpo_preset("grpo")["loss_type"] == "grpo"
    assert grpo_preset("dr_grpo")["loss_type"] == "dr_grpo" and grpo_preset("dr_grpo")["scale_rewards"] == "none"
    dapo = grpo_preset("dapo")
    assert dapo["epsilon_high"] == 0.28 and dapo["mask_truncated_completions"] is True
    gspo = grpo_preset("gspo")
    assert gspo["importance_sampling_level"] == "sequence" and gspo["epsilon"] == 3e-4
    assert grpo_preset("grpo", beta=0.0)["beta"] == 0.0


def test_it_builds_a_valid_trl_config_for_every_preset(tmp_path):
    from rlcore.training.grpo import grpo_config

    for preset in ("grpo", "dr_grpo", "dapo", "gspo"):
        spec = GRPOTrainSpec(output_dir=tmp_path, policy="p", prompt_snapshot="s.jsonl", reward_spec=LENGTH_REWARD,
                             preset=preset, num_generations=4, per_device_train_batch_size=8, device="cpu")
        config = grpo_config(spec, tmp_path / "ck", [1.0, 0.5])
        assert config.loss_type == grpo_preset(preset)["loss_type"]
        assert config.importance_sampling_level == grpo_preset(preset)["importance_sampling_level"]
        assert config.bf16 is False and config.gradient_checkpointing is False  # CPU defaults
        assert config.reward_weights == [1.0, 0.5]


def test_it_names_the_line_of_a_malformed_snapshot_row(tmp_path):
    path = _write(tmp_path / "labels.jsonl", _pairs(3) + ['{"chosen": "a", "rejected": '])
    with pytest.raises(UserError, match=r"labels\.jsonl:4: not valid JSON"):
        preference_rows(path, use_margin=False)


def test_it_names_the_line_of_a_row_missing_a_side(tmp_path):
    path = _write(tmp_path / "labels.jsonl", _pairs(2) + [{"prompt": "q", "chosen": "c"}])
    with pytest.raises(UserError, match=r"labels\.jsonl:3: missing column 'rejected'"):
        preference_rows(path, use_margin=False)


def test_it_rejects_a_non_finite_margin(tmp_path):
    path = _write(tmp_path / "labels.jsonl", [{"chosen": "a", "rejected": "b", "margin": "strong"}])
    with pytest.raises(UserError, match=r"labels\.jsonl:1: column 'margin' must be a finite number"):
        preference_rows(path, use_margin=True)


def test_it_requires_margins_on_every_row_when_asked_to_use_them(tmp_path):
    rows = _pairs(3)
    del rows[1]["margin"]
    with pytest.raises(UserError, match=r"labels\.jsonl:2: use_margin is set"):
        preference_rows(_write(tmp_path / "labels.jsonl", rows), use_margin=True)


def test_it_keeps_conversational_pairs_and_drops_provenance(tmp_path):
    row = {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}],
           "rejected": [{"role": "assistant", "content": "go"}], "annotator": "alice", "margin": 1.5}
    [clean] = preference_rows(_write(tmp_path / "labels.jsonl", [row]), use_margin=True)
    assert clean == {k: row[k] for k in ("prompt", "chosen", "rejected", "margin")}


def test_it_reads_parquet_snapshots(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "labels.parquet"
    pq.write_table(pa.Table.from_pylist(_pairs(12)), path)
    rows = preference_rows(path, use_margin=True)
    assert len(rows) == 12 and rows[0]["margin"] == 0.5


def test_it_refuses_a_snapshot_with_too_few_labels():
    with pytest.raises(UserError, match="only 7 preference pairs; a reward model needs at least 10"):
        split_held_out(_pairs(7), 0.1, seed=0, source="labels.jsonl")


def test_it_holds_out_the_same_pairs_for_the_same_seed():
    a = split_held_out(_pairs(50), 0.2, seed=3)
    b = split_held_out(_pairs(50), 0.2, seed=3)
    assert a == b and len(a[1]) == 10
    assert {r["prompt"] for r in a[0]}.isdisjoint(r["prompt"] for r in a[1])


def test_it_requires_a_prompt_column(tmp_path):
    path = _write(tmp_path / "prompts.jsonl", [{"prompt": "a"}, {"question": "b"}])
    with pytest.raises(UserError, match=r"prompts\.jsonl:2: missing column 'prompt'"):
        prompt_rows(path)


def test_it_measures_calibration_of_margins():
    confident_and_right = pair_metrics([30.0] * 4)
    assert confident_and_right["accuracy"] == 1.0 and confident_and_right["ece"] < 1e-9
    assert confident_and_right["brier"] < 1e-9
    confidently_wrong = pair_metrics([-30.0] * 4)
    assert confidently_wrong["accuracy"] == 0.0 and confidently_wrong["ece"] > 0.99
    assert confidently_wrong["brier"] > 0.99
    assert expected_calibration_error([0.0, 0.0]) == 0.0  # a coin flip that says 0.5 is calibrated
    assert ensemble_margins([[1.0, -2.0], [3.0, 0.0]]) == [2.0, -1.0]


def test_it_says_a_local_backbone_does_not_exist(tmp_path):
    with pytest.raises(UserError, match="backbone: model directory .* does not exist"):
        resolve_model_source(str(tmp_path / "no-such-model"), "backbone")


def test_it_says_a_directory_is_not_a_model(tmp_path):
    with pytest.raises(UserError, match="holds no config.json"):
        resolve_model_source(str(tmp_path), "backbone")


def test_it_says_an_unreachable_hub_backbone_cannot_be_found(tmp_path):
    spec = tmp_path / "rm.json"
    snapshot = _write(tmp_path / "labels.jsonl", _pairs(20))
    spec.write_text(json.dumps({"backbone": "nobody-here/no-such-reward-backbone", "output_dir": str(tmp_path / "o"),
                                "preference_snapshot": str(snapshot)}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "rlcore", "train", "reward-model", str(spec)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "backbone: 'nobody-here/no-such-reward-backbone' is neither a local model directory nor a Hugging Face " \
           "Hub model that could be reached" in done.stderr
    assert not (tmp_path / "o" / "model").exists()


def test_it_turns_out_of_memory_into_advice():
    import torch

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1e12"))
    assert not is_out_of_memory(RuntimeError("size mismatch"))
    spec = RewardModelTrainSpec(output_dir="o", backbone="b", preference_snapshot="p", per_device_train_batch_size=32,
                                max_length=2048)
    message = out_of_memory_message(spec, "max_length")
    assert "per_device_train_batch_size (now 32)" in message and "max_length (now 2048)" in message
    assert "gradient_checkpointing" in message


def _ranking_rows(n_comparisons: int, per_prompt: int = 1) -> list[dict]:
    """Three pairs per comparison (a ranking of three), ``per_prompt`` comparisons per prompt."""
    rows = []
    for c in range(n_comparisons):
        for best, worse in ((0, 1), (0, 2), (1, 2)):
            rows.append({"prompt": f"prompt {c // per_prompt}", "chosen": f" c{c} r{best}",
                         "rejected": f" c{c} r{worse}", "comparison_id": str(c), "label_id": f"{c}-{best}{worse}"})
    return rows


def _comparisons(rows: list[dict]) -> set[str]:
    return {r["chosen"].split()[0] for r in rows}


def test_it_holds_out_whole_comparisons_by_default(tmp_path):
    from rlcore.training.reward_model import load_pairs

    snapshot = _write(tmp_path / "labels.jsonl", _ranking_rows(30))
    for seed in range(5):
        spec = RewardModelTrainSpec(output_dir=tmp_path / "o", backbone="b", preference_snapshot=snapshot, seed=seed)
        assert spec.split_by == "comparison"
        train, held_out, report = load_pairs(spec)
        assert _comparisons(train).isdisjoint(_comparisons(held_out))  # no ranking on both sides
        assert len(train) + len(held_out) == 90 and len(held_out) % 3 == 0 and len(held_out) >= 9
        assert report["split"] == {"by": "comparison", "groups": 30, "held_out_groups": len(held_out) // 3,
                                   "note": ""}
        assert report["rows_in"] == 90 and report["held_out_rows"] == len(held_out)


def test_it_holds_out_whole_prompts_when_asked(tmp_path):
    from rlcore.training.reward_model import load_pairs

    snapshot = _write(tmp_path / "labels.jsonl", _ranking_rows(40, per_prompt=4))
    spec = RewardModelTrainSpec(output_dir=tmp_path / "o", backbone="b", preference_snapshot=snapshot,
                                split_by="prompt", eval_fraction=0.2)
    train, held_out, report = load_pairs(spec)
    assert {r["prompt"] for r in train}.isdisjoint(r["prompt"] for r in held_out)
    assert len(held_out) % 12 == 0 and report["split"]["by"] == "prompt" and report["split"]["groups"] == 10
    with pytest.raises(Exception, match="split_by"):
        RewardModelTrainSpec(output_dir="o", backbone="b", preference_snapshot="p.jsonl", split_by="row")


def test_it_keeps_a_pair_without_comparison_id_on_one_side_and_says_so(tmp_path):
    from rlcore.training.reward_model import load_pairs

    rows = []
    for i in range(12):  # a split tie (both orders) and a second annotator's label of the same pair
        rows += [{"prompt": f"q{i}", "chosen": f" x{i}", "rejected": f" y{i}", "tie": True},
                 {"prompt": f"q{i}", "chosen": f" y{i}", "rejected": f" x{i}", "tie": True},
                 {"prompt": f"q{i}", "chosen": f" x{i}", "rejected": f" y{i}"}]
    spec = RewardModelTrainSpec(output_dir=tmp_path / "o", backbone="b",
                                preference_snapshot=_write(tmp_path / "own.jsonl", rows))
    train, held_out, report = load_pairs(spec)
    assert {r["prompt"] for r in train}.isdisjoint(r["prompt"] for r in held_out)
    assert "36 of 36 rows have no comparison_id" in report["split"]["note"]
    assert report["tie_rows"] == {"train": sum(r["tie"] for r in train), "held_out": sum(r["tie"] for r in held_out)}
    assert report["tie_rows"]["held_out"] == 2 * len(held_out) // 3


def test_it_leaves_ties_out_of_accuracy_brier_and_ece():
    margins = [2.0, -1.0, 0.5, 3.0, -0.2]
    ties = [False, False, False, True, True]
    m = pair_metrics(margins, ties)
    decisive = [2.0, -1.0, 0.5]
    p = [1 / (1 + math.exp(-x)) for x in decisive]
    assert m["n_pairs"] == 3 and m["n_ties_excluded"] == 2
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["margin"] == pytest.approx(sum(decisive) / 3)
    assert m["brier"] == pytest.approx(sum((1 - q) ** 2 for q in p) / 3)
    # ECE by hand: confidences max(p, 1-p) fall in three different 0.05-wide bins, each of one pair
    confidence = [max(q, 1 - q) for q in p]
    correct = [1.0, 0.0, 1.0]
    assert m["ece"] == pytest.approx(sum(abs(c - k) for c, k in zip(confidence, correct)) / 3)
    # loss: -log s(d) for a win, -1/2 log s(d) - 1/2 log s(-d) for a tie (Bradley-Terry target 1/2)
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    hand = [-math.log(s(x)) for x in decisive] + [-0.5 * math.log(s(x)) - 0.5 * math.log(s(-x)) for x in (3.0, -0.2)]
    assert m["loss"] == pytest.approx(sum(hand) / 5)
    only_ties = pair_metrics([1.0, -1.0], [True, True])
    assert only_ties["accuracy"] is None and only_ties["n_pairs"] == 0 and only_ties["n_ties_excluded"] == 2


@pytest.mark.parametrize("successes,n", [(8, 10), (0, 5), (37, 40), (2, 2), (51, 114)])
def test_its_accuracy_interval_is_scipys_wilson_interval(successes, n):
    from scipy.stats import binomtest

    from rlcore.training.calibration import wilson_interval

    reference = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(successes, n) == pytest.approx((reference.low, reference.high), abs=1e-9)
    margins = [1.0] * successes + [-1.0] * (n - successes)
    m = pair_metrics(margins)
    assert (m["accuracy_ci_low"], m["accuracy_ci_high"]) == pytest.approx((reference.low, reference.high))
