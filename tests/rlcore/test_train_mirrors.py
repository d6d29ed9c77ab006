"""Metric mirrors (spec field report_to): TensorBoard event files and a Trackio project under the run's
folder hold the same values as metrics.jsonl, read back with each tracker's own reader."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from rlcore.errors import UserError
from rlcore.training import tiny_models
from rlcore.training.grpo import train_grpo
from rlcore.training.reward_model import train_reward_model
from rlcore.training.specs import GRPOTrainSpec, RewardModelTrainSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    return tiny_models.write_keyword_preferences(tmp_path_factory.mktemp("labels") / "labels.jsonl", 48)


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch):
    # the run points the trackers at its folder through the environment; give it back after each test
    for name in ("TENSORBOARD_LOGGING_DIR", "TRACKIO_DIR", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)


def _metrics(run: Path, name: str) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["value"] for r in rows if r["name"] == name}


def _tensorboard_scalars(folder: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [event_file] = list(folder.glob("events.out.tfevents.*"))  # one writer per run, in the folder named
    accumulator = EventAccumulator(str(event_file))
    accumulator.Reload()
    return {event.step: event.value for event in accumulator.Scalars(tag)}


def _rm_spec(tmp_path, labels, **overrides) -> RewardModelTrainSpec:
    fields = dict(output_dir=tmp_path / "run", backbone=str(tiny_models.minilm_path()), preference_snapshot=labels,
                  max_steps=4, max_length=64, logging_steps=1, save_steps=100, per_device_train_batch_size=8)
    return RewardModelTrainSpec(**(fields | overrides))


def test_it_mirrors_reward_model_metrics_to_tensorboard_event_files(tmp_path, labels):
    spec = _rm_spec(tmp_path, labels, report_to=["tensorboard"])
    assert train_reward_model(spec) == 0

    ours = _metrics(tmp_path / "run", "loss")
    mirrored = _tensorboard_scalars(tmp_path / "run" / "tensorboard", "train/loss")
    assert sorted(ours) == [1, 2, 3, 4]
    assert mirrored.keys() == ours.keys()
    for step, value in ours.items():
        assert mirrored[step] == pytest.approx(value, rel=1e-6)  # event files store float32
    assert _tensorboard_scalars(tmp_path / "run" / "tensorboard", "train/accuracy") == pytest.approx(
        _metrics(tmp_path / "run", "accuracy"), rel=1e-6)
    assert not list((tmp_path / "run" / "checkpoints").rglob("events.out.tfevents.*"))


def test_it_mirrors_grpo_rewards_to_tensorboard(tmp_path):
    policy = tiny_models.build_tiny_causal_lm(tmp_path / "policy")
    prompts = tiny_models.write_prompts(tmp_path / "prompts.jsonl", 8)
    reward_spec = {"name": "r", "components": [
        {"kind": "length_penalty", "name": "long", "max_length": 8, "cache_length": 4}]}
    spec = GRPOTrainSpec(output_dir=tmp_path / "run", policy=str(policy), prompt_snapshot=prompts,
                         reward_spec=reward_spec, preset="grpo", max_steps=2, per_device_train_batch_size=4,
                         num_generations=4, max_completion_length=8, save_steps=100, report_to=["tensorboard"])
    assert train_grpo(spec) == 0

    for name in ("reward", "rewards/long/mean", "kl"):
        ours = _metrics(tmp_path / "run", name)
        assert sorted(ours) == [1, 2]
        assert _tensorboard_scalars(tmp_path / "run" / "tensorboard", f"train/{name}") == pytest.approx(ours, rel=1e-6)


def test_it_mirrors_to_a_trackio_project_in_the_run_folder(tmp_path, labels):
    # through the CLI: trackio reads its folder once, when the training child first imports it
    spec_path = tmp_path / "rm.json"
    spec_path.write_text(_rm_spec(tmp_path, labels, report_to=["trackio"]).model_dump_json())
    done = subprocess.run([sys.executable, "-m", "rlcore", "train", "reward-model", str(spec_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    # read back with trackio's own storage reader (in a process of its own, for the same reason)
    reader = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage as S; "
              "print(json.dumps(S.get_logs('run', 'model'), default=str))")
    read = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TRACKIO_DIR": str(tmp_path / "run" / "trackio")})
    assert read.returncode == 0, read.stderr[-3000:]
    # trackio's own step counts log calls; transformers logs the optimizer step as train/global_step
    mirrored = {row["train/global_step"]: row["train/loss"] for row in json.loads(read.stdout.splitlines()[-1])
                if "train/loss" in row}
    assert mirrored == pytest.approx(_metrics(tmp_path / "run", "loss"))


def test_it_refuses_a_tracker_that_is_not_installed_when_the_spec_is_built(tmp_path, labels):
    pytest.importorskip("tensorboard")
    if __import__("importlib.util").util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(ValidationError, match="wandb is not installed here: pip install wandb"):
        _rm_spec(tmp_path, labels, report_to=["tensorboard", "wandb"])

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(f"output_dir: {tmp_path / 'run'}\nbackbone: b\npreference_snapshot: {labels}\n"
                         "report_to: [wandb]\n")
    with pytest.raises(UserError, match=r"spec.yaml: field 'report_to': .*wandb is not installed"):
        load_spec(spec_file, "reward_model")
