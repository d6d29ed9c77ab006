"""Reward-model training through TRL's RewardTrainer: accuracy, ensembles, margins, stop/resume, bad input."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rlcore.errors import UserError
from rlcore.events import parse_line
from rlcore.training import tiny_models
from rlcore.training.reward_model import train_reward_model
from rlcore.training.runtime import EXIT_STOPPED
from rlcore.training.specs import RewardModelTrainSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    return tiny_models.build_tiny_reward_model(tmp_path_factory.mktemp("tiny-rm"))


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    return tiny_models.write_keyword_preferences(tmp_path_factory.mktemp("labels") / "labels.jsonl", 96)


def _events(text: str) -> list[dict]:
    return [e for e in map(parse_line, text.splitlines()) if e]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_it_reaches_high_held_out_accuracy_on_minilm(tmp_path, labels, capsys):
    spec = RewardModelTrainSpec(output_dir=tmp_path / "run", backbone=str(tiny_models.minilm_path()),
                                preference_snapshot=labels, max_steps=12, learning_rate=8e-5, max_length=64,
                                eval_fraction=0.2, save_steps=100, logging_steps=4)
    assert train_reward_model(spec) == 0

    events = _events(capsys.readouterr().out)
    [artifact] = [e for e in events if e["kind"] == "artifact"]
    assert artifact["type"] == "reward_model" and artifact["path"] == str(tmp_path / "run" / "model")
    assert artifact["metrics"]["accuracy"] > 0.9
    names = {e["name"] for e in events if e["kind"] == "metric"}
    assert {"loss", "accuracy", "margin", "eval_accuracy", "eval_margin", "eval_ece", "eval_brier"} <= names
    assert {m["name"] for m in _metrics(tmp_path / "run")} == names
    assert [e["step"] for e in events if e["kind"] == "progress"][-1] == 12

    # the saved directory is a plain Hugging Face model that scores the keyword higher
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = tmp_path / "run" / "model"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(["Question: any news? here it is, thanks for asking.", "Question: any news? here it is."],
                      return_tensors="pt", padding=True)
    with torch.no_grad():
        good, bad = model(**batch).logits.squeeze(-1).tolist()
    assert good > bad
    assert not list(tmp_path.glob("run/.model.partial-*"))


def test_it_trains_an_ensemble_with_one_model_per_seed(tmp_path, tiny_backbone, labels, capsys):
    spec = RewardModelTrainSpec(output_dir=tmp_path / "run", backbone=str(tiny_backbone), preference_snapshot=labels,
                                max_steps=3, ensemble_size=2, save_steps=100)
    assert train_reward_model(spec) == 0

    events = _events(capsys.readouterr().out)
    artifacts = [e for e in events if e["kind"] == "artifact"]
    assert [a["type"] for a in artifacts] == ["reward_model", "reward_model", "reward_model_ensemble"]
    assert [a["member"] for a in artifacts[:2]] == [0, 1]
    assert artifacts[2]["members"] == [str(tmp_path / "run" / "model-0"), str(tmp_path / "run" / "model-1")]
    summary = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert set(summary) == {"member-0", "member-1", "ensemble", "data"}
    assert set(summary["ensemble"]) == {"accuracy", "accuracy_ci_low", "accuracy_ci_high", "n_pairs",
                                        "n_ties_excluded", "margin", "brier", "ece", "loss"}
    members = [json.loads((tmp_path / "run" / f"model-{k}" / "rlcore_eval.json").read_text()) for k in (0, 1)]
    assert [m["seed"] for m in members] == [42, 43]
    assert members[0]["margins"] != members[1]["margins"]  # different seeds, different heads
    names = {e["name"] for e in events if e["kind"] == "metric"}
    assert {"member-0/loss", "member-1/loss", "ensemble/eval_accuracy"} <= names
    assert max(e["step"] for e in events if e["kind"] == "progress") == 6  # 2 members x 3 steps


def test_it_uses_label_margins_in_the_loss(tmp_path, tiny_backbone, labels, capsys):
    def first_loss(use_margin: bool) -> float:
        spec = RewardModelTrainSpec(output_dir=tmp_path / f"run-{use_margin}", backbone=str(tiny_backbone),
                                    preference_snapshot=labels, max_steps=1, use_margin=use_margin, save_steps=100)
        assert train_reward_model(spec) == 0
        return next(m["value"] for m in _metrics(spec.output_dir) if m["name"] == "loss")

    # same seed, same batch: a positive margin can only raise -log sigmoid(r_c - r_r - margin)
    assert first_loss(True) > first_loss(False)


def test_it_adds_label_smoothing_to_trl_loss(tiny_backbone, labels, tmp_path):
    import torch
    from datasets import Dataset

    from rlcore.training.reward_model import reward_config, reward_trainer_class
    from rlcore.training.snapshot import preference_rows

    rows = preference_rows(labels, use_margin=False)[:8]
    losses = {}
    for smoothing in (0.0, 0.2):
        spec = RewardModelTrainSpec(output_dir=tmp_path, backbone=str(tiny_backbone), preference_snapshot=labels,
                                    label_smoothing=smoothing)
        trainer = reward_trainer_class(smoothing)(
            model=str(tiny_backbone), args=reward_config(spec, tmp_path / "ck", 0, None),
            train_dataset=Dataset.from_list(rows))
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
        batch = {name: tensor.to(trainer.args.device) for name, tensor in batch.items()}  # cuda when there is one
        with torch.no_grad():
            loss, outputs = trainer.compute_loss(trainer.model.eval(), dict(batch), return_outputs=True)
        chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), 2)
        losses[smoothing] = (loss.item(), (chosen - rejected).mean().item())
    (plain, _), (smoothed, margin) = losses[0.0], losses[0.2]
    assert smoothed == pytest.approx(plain + 0.2 * margin, abs=1e-5)


def test_it_trains_kept_ties_with_the_bradley_terry_tie_loss(tiny_backbone, labels, tmp_path):
    import math

    import torch
    from datasets import Dataset

    from rlcore.training.reward_model import reward_config, reward_trainer_class
    from rlcore.training.snapshot import preference_rows

    rows = [{**row, "tie": i % 2 == 1} for i, row in enumerate(preference_rows(labels, use_margin=False)[:8])]
    spec = RewardModelTrainSpec(output_dir=tmp_path, backbone=str(tiny_backbone), preference_snapshot=labels)
    trainer = reward_trainer_class(0.0, ties=True)(
        model=str(tiny_backbone), args=reward_config(spec, tmp_path / "ck", 0, None),
        train_dataset=Dataset.from_list(rows))
    # the tie column survives TRL's column pruning and reaches the loss through the training dataloader
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["tie"].dtype == torch.bool and int(batch["tie"].sum()) == 4
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(trainer.model.eval(), dict(batch), return_outputs=True)
    chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), 2)
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    hand = []
    for d, tie in zip((chosen - rejected).tolist(), batch["tie"].tolist()):
        hand.append(-0.5 * math.log(s(d)) - 0.5 * math.log(s(-d)) if tie else -math.log(s(d)))
    assert loss.item() == pytest.approx(sum(hand) / len(hand), abs=1e-5)
    # with non-zero margins the tie and win losses differ, so the check above tells them apart
    assert any(abs(d) > 1e-4 for d in (chosen - rejected).tolist())


def test_it_reports_rows_in_kept_and_dropped_by_reason(tmp_path, tiny_backbone, capsys):
    rows = []
    for i in range(24):
        long = " word" * 200 if i % 6 == 0 else ""  # 4 comparisons far over max_length
        rows.append({"prompt": f"Question {i}?", "chosen": f" yes thanks {i}{long}", "rejected": f" no {i}",
                     "comparison_id": str(i), "tie": i % 4 == 1})
    snapshot = tmp_path / "labels.jsonl"
    snapshot.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = RewardModelTrainSpec(output_dir=tmp_path / "run", backbone=str(tiny_backbone), preference_snapshot=snapshot,
                                max_steps=1, max_length=64, eval_fraction=0.25, save_steps=100)
    assert train_reward_model(spec) == 0
    captured = capsys.readouterr()
    data = json.loads((tmp_path / "run" / "eval.json").read_text())["data"]
    assert data["rows_in"] == 24 and data["train_rows"] + data["held_out_rows"] == 24
    assert data["split"]["by"] == "comparison" and data["split"]["groups"] == 24
    dropped = sum(data["dropped"].values())
    assert dropped == 4 and data["train_rows_kept"] + data["held_out_rows_kept"] == 20
    assert data["tie_rows"]["train"] + data["tie_rows"]["held_out"] == 6
    metrics = {m["name"]: m["value"] for m in _metrics(tmp_path / "run")}
    assert metrics["data/rows_in"] == 24 and metrics["data/dropped_too_long"] == 4
    [artifact] = [e for e in _events(captured.out) if e["kind"] == "artifact"]
    assert artifact["metrics"]["n_pairs"] + artifact["metrics"]["n_ties_excluded"] == data["held_out_rows_kept"]
    assert artifact["data"] == data and "rows in" in captured.err


def test_it_saves_a_checkpoint_on_sigterm_and_resumes_from_it(tmp_path, tiny_backbone, labels):
    spec_path = tmp_path / "rm.json"
    spec_path.write_text(json.dumps({"backbone": str(tiny_backbone), "preference_snapshot": str(labels),
                                     "output_dir": str(tmp_path / "run"), "max_steps": 60, "save_steps": 5,
                                     "per_device_train_batch_size": 4}))
    command = [sys.executable, "-m", "rlcore", "train", "reward-model", str(spec_path)]
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in child.stdout:
        event = parse_line(line)
        seen.append(line)
        if event and event["kind"] == "progress" and event["step"] >= 7:  # past the first checkpoint
            child.send_signal(signal.SIGTERM)
            break
    rest, errors = child.communicate(timeout=120)
    assert child.returncode == EXIT_STOPPED, errors
    assert "stop requested" in errors
    stopped_at = max(e["step"] for e in _events("".join(seen) + rest) if e["kind"] == "progress")
    assert stopped_at < 60
    assert (tmp_path / "run" / "checkpoints" / f"checkpoint-{stopped_at}").is_dir()
    assert not (tmp_path / "run" / "model").exists()  # no half-trained model is published

    resumed = subprocess.run(command + ["--resume"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    progress = [e["step"] for e in _events(resumed.stdout) if e["kind"] == "progress"]
    assert progress[0] == stopped_at and progress[-1] == 60
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    steps = [m["step"] for m in _metrics(tmp_path / "run") if m["name"] == "loss"]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) == 60  # one loss per step, none twice


def test_it_stops_with_advice_when_the_loss_turns_nan(tmp_path, tiny_backbone, labels):
    spec = RewardModelTrainSpec(output_dir=tmp_path / "run", backbone=str(tiny_backbone), preference_snapshot=labels,
                                max_steps=20, learning_rate=1e30, save_steps=1)
    with pytest.raises(UserError, match=r"loss became NaN/inf at step \d+; lower learning_rate \(now 1e\+30\)"):
        train_reward_model(spec)
    assert not (tmp_path / "run" / "model").exists()


def test_it_refuses_too_few_labels(tmp_path, tiny_backbone):
    snapshot = tiny_models.write_keyword_preferences(tmp_path / "few.jsonl", 6)
    spec = RewardModelTrainSpec(output_dir=tmp_path / "run", backbone=str(tiny_backbone), preference_snapshot=snapshot)
    with pytest.raises(UserError, match=r"few\.jsonl: only 6 preference pairs"):
        train_reward_model(spec)


def test_it_reports_a_malformed_row_with_its_line_and_exit_code_2(tmp_path, tiny_backbone):
    snapshot = tiny_models.write_keyword_preferences(tmp_path / "labels.jsonl", 12)
    lines = snapshot.read_text().splitlines()
    lines[4] = json.dumps({"prompt": "q", "chosen": 3, "rejected": "b"})
    snapshot.write_text("\n".join(lines) + "\n")
    spec_path = tmp_path / "rm.yaml"
    spec_path.write_text(f"backbone: {tiny_backbone}\npreference_snapshot: {snapshot}\noutput_dir: {tmp_path}/run\n")
    done = subprocess.run([sys.executable, "-m", "rlcore", "train", "reward-model", str(spec_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"error: {snapshot}:5: column 'chosen' must be text or a non-empty list" in done.stderr


def test_it_says_a_missing_backbone_directory_does_not_exist(tmp_path, labels):
    spec = RewardModelTrainSpec(output_dir=tmp_path / "run", backbone=str(tmp_path / "deleted-model"),
                                preference_snapshot=labels)
    with pytest.raises(UserError, match="backbone: model directory .*deleted-model' does not exist"):
        train_reward_model(spec)


def test_a_stop_during_the_last_step_still_completes_and_publishes(tmp_path, tiny_backbone, labels):
    """SIGTERM (a cancel) as the only step runs: the plan completes, so the run publishes and exits 0."""
    spec_path = tmp_path / "rm.json"
    spec_path.write_text(json.dumps({"backbone": str(tiny_backbone), "preference_snapshot": str(labels),
                                     "output_dir": str(tmp_path / "run"), "max_steps": 1, "save_steps": 1}))
    child = subprocess.Popen([sys.executable, "-m", "rlcore", "train", "reward-model", str(spec_path)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in child.stdout:
        if '"progress"' in line:  # training began: SIGTERM is now a stop request
            child.send_signal(signal.SIGTERM)
            break
    rest, errors = child.communicate(timeout=120)
    assert child.returncode == 0, errors
    [artifact] = [e for e in _events(rest) if e["kind"] == "artifact"]
    assert artifact["type"] == "reward_model" and artifact["step"] == 1
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def test_a_stop_at_the_end_of_one_ensemble_member_stops_before_the_next(tmp_path, tiny_backbone, labels):
    """Member 0 finished its plan as the stop came: it is published; member 1 is not started (exit 143)."""
    spec_path = tmp_path / "rm.json"
    spec_path.write_text(json.dumps({"backbone": str(tiny_backbone), "preference_snapshot": str(labels),
                                     "output_dir": str(tmp_path / "run"), "max_steps": 1, "save_steps": 1,
                                     "ensemble_size": 2}))
    child = subprocess.Popen([sys.executable, "-m", "rlcore", "train", "reward-model", str(spec_path)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in child.stdout:
        if '"progress"' in line:
            child.send_signal(signal.SIGTERM)
            break
    rest, errors = child.communicate(timeout=120)
    assert child.returncode == EXIT_STOPPED, errors
    assert [e["member"] for e in _events(rest) if e["kind"] == "artifact"] == [0]
    assert (tmp_path / "run" / "model-0" / "config.json").is_file() and not (tmp_path / "run" / "model-1").exists()


def test_resuming_a_run_that_reached_max_steps_trains_no_further_and_publishes(tmp_path, tiny_backbone, labels,
                                                                                 capsys):
    """A run stopped right at its last step left checkpoint-2 of 2 and no model: resuming it must not run a
    step 3; it publishes the weights of checkpoint-2 and succeeds."""
    import shutil

    spec = RewardModelTrainSpec(output_dir=tmp_path / "run", backbone=str(tiny_backbone), preference_snapshot=labels,
                                max_steps=2, save_steps=1, logging_steps=1)
    assert train_reward_model(spec) == 0
    shutil.rmtree(tmp_path / "run" / "model")  # as if the stop came before the model was published
    capsys.readouterr()
    assert train_reward_model(spec.model_copy(update={"resume": True})) == 0
    events = _events(capsys.readouterr().out)
    assert max(e["step"] for e in events if e["kind"] in ("progress", "metric")) == 2
    assert {e["total"] for e in events if e["kind"] == "progress"} == {2}
    [artifact] = [e for e in events if e["kind"] == "artifact"]
    assert artifact["type"] == "reward_model" and artifact["step"] == 2

    import torch
    from safetensors.torch import load_file

    published = load_file(tmp_path / "run" / "model" / "model.safetensors")
    checkpoint = load_file(tmp_path / "run" / "checkpoints" / "checkpoint-2" / "model.safetensors")
    assert published.keys() == checkpoint.keys()
    assert all(torch.equal(published[k], checkpoint[k]) for k in published)
