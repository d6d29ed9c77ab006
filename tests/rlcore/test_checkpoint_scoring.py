"""``python -m rlcore analysis overopt-score``: per checkpoint, generation on a fixed prompt set, the k1 KL from
the start policy (checked against a plain one-sample forward pass), the proxy with weighted components, the
gold, and clear refusals for a deleted checkpoint."""

import json
import shutil
import subprocess
import sys

import pytest

from rlcore.analysis.checkpoint_scoring import load_score_spec, score_checkpoints
from rlcore.analysis.overoptimization import analyse_overoptimization, read_samples
from rlcore.errors import UserError
from rlcore.training.tiny_models import build_tiny_causal_lm, build_tiny_reward_model
from tests.conftest import ROOT

RUBRIC = {"name": "r", "criteria": [{"name": "has_w", "rule": {"kind": "regex", "pattern": "w"}}]}


def _perturbed(start, folder):
    """The start policy with noise on its weights and the same tokenizer, as a trained checkpoint is."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(start)
    torch.manual_seed(5)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(start).save_pretrained(folder)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    start = build_tiny_causal_lm(root / "start", seed=0)
    _perturbed(start, root / "out" / "checkpoints" / "checkpoint-10")
    shutil.copytree(start, root / "out" / "checkpoints" / "checkpoint-20")  # unchanged weights: KL must be 0
    rm = build_tiny_reward_model(root / "rm", seed=2)
    (root / "prompts.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"hello w{i} question"}) + "\n"
                                                for i in range(3)))
    return root, start, rm


def _spec(root, start, gold, output="scored.jsonl", steps=(10, 20)):
    spec = {"prompts": str(root / "prompts.jsonl"), "output": str(root / output), "start_policy": str(start),
            "checkpoints": [{"path": str(root / "out" / "checkpoints" / f"checkpoint-{s}"), "step": s} for s in steps],
            "reward": {"name": "proxy", "components": [{"kind": "rubric_rules", "name": "rules", "rubric": RUBRIC,
                                                        "weight": 2.0}]},
            "gold": gold, "samples_per_prompt": 2, "max_new_tokens": 5, "batch_size": 4, "seed": 1}
    path = root / f"{output}.json"
    path.write_text(json.dumps(spec))
    return path


def test_it_scores_each_checkpoint_with_kl_proxy_and_gold(run):
    root, start, rm = run
    gold = {"kind": "reward_model", "reward": {"name": "gold", "components": [
        {"kind": "reward_model", "name": "rm", "path": str(rm), "device": "cpu"}]}}
    spec_path = _spec(root, start, gold)
    out = subprocess.run([sys.executable, "-m", "rlcore", "analysis", "overopt-score", "--spec", str(spec_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout[out.stdout.index("{\n"):]) == {"checkpoints_scored": 3, "skipped": 0, "rows": 18}
    rows = read_samples(root / "scored.jsonl")
    assert [r.checkpoint for r in rows[::6]] == ["start", "checkpoint-10", "checkpoint-20"]
    by = {r.response_id: r for r in rows}
    assert all(r.kl == 0.0 for r in rows if r.checkpoint in ("start", "checkpoint-20"))
    # proxy: the rule (1 when the completion holds a "w") times its weight 2, by hand
    for r in rows:
        assert r.components == {"rules": 2.0 * ("w" in r.completion)} and r.proxy == r.components["rules"]
        assert r.gold is not None
    # KL of checkpoint-10 against an independent, unbatched forward pass of both models
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(start)
    models = [AutoModelForCausalLM.from_pretrained(p).eval() for p in (root / "out/checkpoints/checkpoint-10", start)]
    sample = next(r for r in rows if r.checkpoint == "checkpoint-10" and r.tokens)
    p_ids = tok(sample.prompt, add_special_tokens=False)["input_ids"]
    c_ids = tok(sample.completion, add_special_tokens=False)["input_ids"]
    sums = []
    for model in models:
        with torch.no_grad():
            logits = model(torch.tensor([p_ids + c_ids])).logits[0]
        total = 0.0
        for t, token in enumerate(c_ids):
            total += float(torch.log_softmax(logits[len(p_ids) + t - 1], -1)[token])
        sums.append(total)
    assert sample.tokens == len(c_ids)
    assert sample.kl == pytest.approx((sums[0] - sums[1]) / len(c_ids), abs=1e-4)
    assert by[sample.response_id].kl != 0.0
    report = analyse_overoptimization(rows)
    assert [c.checkpoint for c in report.checkpoints] == ["start", "checkpoint-10", "checkpoint-20"]

    # a re-run skips what is there
    again = score_checkpoints(load_score_spec(spec_path))
    assert again == {"checkpoints_scored": 0, "skipped": 3, "rows": 0}
    assert len(read_samples(root / "scored.jsonl")) == 18


def test_human_gold_leaves_gold_for_people(run):
    root, start, _ = run
    result = score_checkpoints(load_score_spec(_spec(root, start, {"kind": "human_win_rate"}, "human.jsonl", (10,))))
    assert result["rows"] == 12
    assert all(r.gold is None for r in read_samples(root / "human.jsonl"))


def test_a_deleted_checkpoint_is_refused_by_name(run):
    root, start, _ = run
    spec = _spec(root, start, {"kind": "human_win_rate"}, "gone.jsonl", (10, 30))
    with pytest.raises(UserError, match=r"checkpoint-30 \(.*checkpoint-30\).*pick checkpoints the run still has"):
        score_checkpoints(load_score_spec(spec))
    assert not (root / "gone.jsonl").exists()


def test_a_checkpoint_with_another_tokenizer_is_refused(run, tmp_path):
    root, start, _ = run
    build_tiny_causal_lm(root / "out" / "checkpoints" / "checkpoint-40", seed=7)
    with pytest.raises(UserError, match="checkpoint-40.*tokenizer"):
        score_checkpoints(load_score_spec(_spec(root, start, {"kind": "human_win_rate"}, "tok.jsonl", (40,))))


def test_a_gold_that_needs_a_spec_names_the_field(run):
    root, start, _ = run
    with pytest.raises(UserError, match="gold"):
        load_score_spec(_spec(root, start, {"kind": "lm_judge"}, "bad.jsonl"))
