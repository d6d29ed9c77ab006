"""``python -m rlcore generate``: local causal LMs (batched, left-padded) and OpenAI-compatible endpoints, one
JSONL line per (prompt, sample) with provenance, appended as it goes; a re-run never duplicates; bad input is
refused with a message naming the thing to change, and what was generated is kept."""

import json
import subprocess
import sys
import time

import pytest

from rlcore.errors import UserError
from rlcore.generation.run import existing_keys, generate
from rlcore.generation.spec import GenerationSpec
from rlcore.judges.testing_server import ChatCompletionsServer, always, scripted, ScriptedReply
from rlcore.training.tiny_models import build_tiny_causal_lm
from tests.conftest import ROOT, free_port


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("policy") / "lm")


def _prompts(path, n=5, extra=()):
    rows = [{"prompt": f"hello w{i} question"} for i in range(n)] + list(extra)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_it_generates_every_prompt_and_sample_from_a_local_model_with_provenance(tiny_lm, tmp_path):
    prompts = _prompts(tmp_path / "p.jsonl", extra=[{"id": "chat", "prompt": [{"role": "user", "content": "hi"}]}])
    spec_file = tmp_path / "gen.yaml"
    spec_file.write_text(f"prompts: p.jsonl\noutput: out.jsonl\nsamples_per_prompt: 2\nmax_new_tokens: 6\n"
                         f"batch_size: 4\nseed: 3\npolicies:\n  - kind: folder\n    location: {tiny_lm}\n"
                         "    name: start\n    step: 0\n")
    run = subprocess.run([sys.executable, "-m", "rlcore", "generate", "--spec", str(spec_file)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = _lines(tmp_path / "out.jsonl")
    assert sorted((l["prompt_key"], l["sample_index"]) for l in lines) == sorted(
        [(str(i), s) for i in range(1, 6) for s in (0, 1)] + [("chat", 0), ("chat", 1)])
    first = lines[0]
    assert first["policy"] == {"kind": "folder", "location": str(tiny_lm), "name": "start", "registry_id": None,
                               "step": 0}
    assert first["sampling"] == {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 6, "seed": 3}
    assert first["finish_reason"] in ("stop", "length") and first["generated_at"]
    progress = [json.loads(l) for l in run.stdout.splitlines() if '"progress"' in l]
    assert progress[0] == {"kind": "progress", "step": 0, "total": 12} and progress[-1]["step"] == 12
    assert prompts.exists()


def test_left_padded_batches_give_what_each_prompt_gives_alone(tiny_lm, tmp_path):
    """Greedy decoding: batching with left padding must not change any response (plain transformers, one by one)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [{"prompt": "hello"}, {"prompt": "w1 w2 w3 w4 w5 w6 w7 question answer"}, {"prompt": "thanks w9"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = GenerationSpec(prompts=tmp_path / "p.jsonl", output=tmp_path / "o.jsonl", temperature=0,
                          max_new_tokens=5, batch_size=3, policies=[{"kind": "folder", "location": str(tiny_lm)}])
    generate(spec)
    got = {l["prompt_key"]: l["response"] for l in _lines(spec.output)}
    tok, model = AutoTokenizer.from_pretrained(tiny_lm), AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    for line, row in enumerate(rows, start=1):
        ids = tok(row["prompt"], return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
        alone = out[0, ids["input_ids"].shape[1]:].tolist()
        if tok.eos_token_id in alone:
            alone = alone[:alone.index(tok.eos_token_id)]
        assert got[str(line)] == tok.decode(alone, skip_special_tokens=True)


def test_a_rerun_generates_only_what_is_missing_and_never_duplicates(tiny_lm, tmp_path):
    spec = GenerationSpec(prompts=_prompts(tmp_path / "p.jsonl", n=4), output=tmp_path / "o.jsonl",
                          max_new_tokens=4, samples_per_prompt=2, policies=[{"kind": "folder", "location": str(tiny_lm)}])
    generate(spec)
    lines = spec.output.read_text().splitlines()
    # a run killed mid-write: three whole lines and half of the fourth
    spec.output.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    counts = generate(spec)
    assert counts == {"written": 5, "skipped": 3, "total": 8}
    keys = [(l["prompt_key"], l["sample_index"]) for l in _lines(spec.output)]
    assert len(keys) == len(set(keys)) == 8
    assert generate(spec) == {"written": 0, "skipped": 8, "total": 8}
    # other sampling settings are a different generation: they add, and are told apart by generation_key
    hotter = spec.model_copy(update={"temperature": 0.5})
    assert generate(hotter)["written"] == 8 and len(existing_keys(spec.output)) == 16


def test_it_generates_from_an_endpoint_with_bounded_concurrency_and_per_sample_seeds(tmp_path):
    with ChatCompletionsServer(always("an answer"), latency_s=0.05, model_name="served") as server:
        spec = GenerationSpec(prompts=_prompts(tmp_path / "p.jsonl", n=10), output=tmp_path / "o.jsonl",
                              samples_per_prompt=2, temperature=0.7, top_p=0.9, max_new_tokens=20, seed=5,
                              policies=[{"kind": "endpoint", "location": "served", "base_url": server.base_url,
                                         "max_concurrency": 3}])
        assert generate(spec)["written"] == 20
        stats = server.stats
    assert stats.requests == 20 and stats.max_in_flight <= 3
    lines = _lines(spec.output)
    assert {l["response"] for l in lines} == {"an answer"} and lines[0]["policy"]["kind"] == "endpoint"
    assert len({(l["prompt_key"], l["sample_index"]) for l in lines}) == 20


def test_a_slow_endpoint_request_holds_up_one_slot_not_a_round(tmp_path):
    # one request (the slow prompt's sample 0) takes 0.8 s, the others 0.05 s, two slots: the other slot must serve every fast prompt while
    # the slow one is out (waiting for the slowest request of each round would start most of them after it)
    arrivals: list[tuple[float, str]] = []

    def answer(body):
        text = body["messages"][-1]["content"]
        arrivals.append((time.monotonic(), text))
        return ScriptedReply(content="ok", delay_s=0.8 if "slow" in text and body["seed"] == 7 else 0.0)

    rows = [{"id": "slow", "prompt": "slow one"}] + [{"id": f"f{i}", "prompt": f"fast {i}"} for i in range(8)]
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ChatCompletionsServer(answer, latency_s=0.05, keep_bodies=True) as server:
        spec = GenerationSpec(prompts=prompts, output=tmp_path / "o.jsonl", batch_size=2, seed=7,
                              samples_per_prompt=2, policies=[{"kind": "endpoint", "location": "m",
                                                               "base_url": server.base_url, "max_concurrency": 2}])
        assert generate(spec) == {"written": 18, "skipped": 0, "total": 18}
        stats = server.stats
    assert stats.max_in_flight <= 2
    slow_started = min(t for t, text in arrivals if "slow" in text)
    fast_started = sorted(t for t, text in arrivals if "fast" in text)
    # the first slow request (sample 0) is out for 0.8 s; the other slot serves fast ones meanwhile (~0.05 s each)
    assert sum(t < slow_started + 0.75 for t in fast_started) >= 6
    lines = _lines(spec.output)
    assert sorted((l["prompt_key"], l["sample_index"]) for l in lines) == sorted(
        (r["id"], i) for r in rows for i in range(2))
    # each sample index keeps its own seed (seed + index)
    seeds = {(b["messages"][-1]["content"], b["seed"]) for b in stats.bodies}
    assert seeds == {(r["prompt"], 7 + i) for r in rows for i in range(2)}
    assert generate(spec) == {"written": 0, "skipped": 18, "total": 18}


def test_it_retries_a_failing_endpoint_and_keeps_going(tmp_path):
    replies = scripted([ScriptedReply(status=500)], then=ScriptedReply(content="ok"))
    with ChatCompletionsServer(replies) as server:
        spec = GenerationSpec(prompts=_prompts(tmp_path / "p.jsonl", n=3), output=tmp_path / "o.jsonl",
                              policies=[{"kind": "endpoint", "location": "m", "base_url": server.base_url,
                                         "max_retries": 2, "max_concurrency": 1}])
        assert generate(spec)["written"] == 3


def test_an_unreachable_endpoint_is_named_and_nothing_half_written(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    spec = GenerationSpec(prompts=_prompts(tmp_path / "p.jsonl", n=3), output=tmp_path / "o.jsonl",
                          policies=[{"kind": "endpoint", "location": "m", "base_url": url, "max_retries": 0}])
    with pytest.raises(UserError) as refused:
        generate(spec)
    message = str(refused.value)
    assert f"at {url}: 3 of 3 requests failed" in message and "could not reach" in message
    assert "check the endpoint URL" in message and "0 responses were kept" in message
    assert spec.output.read_text() == ""


def test_a_folder_that_is_not_a_causal_lm_is_refused_by_name(tmp_path):
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    spec = GenerationSpec(prompts=_prompts(tmp_path / "p.jsonl"), output=tmp_path / "o.jsonl",
                          policies=[{"kind": "folder", "location": str(folder), "name": "enc"}])
    with pytest.raises(UserError, match=r"policy 'enc': .*is not a causal language model \(BertModel\)"):
        generate(spec)


def test_a_deleted_checkpoint_is_named(tmp_path):
    spec = GenerationSpec(prompts=_prompts(tmp_path / "p.jsonl"), output=tmp_path / "o.jsonl",
                          policies=[{"kind": "folder", "location": str(tmp_path / "checkpoint-4"), "name": "ck"}])
    with pytest.raises(UserError, match=r"policy 'ck': model directory .*checkpoint-4' does not exist"):
        generate(spec)


def test_a_prompt_longer_than_the_context_is_refused_with_its_count_or_truncated_left(tmp_path):
    from transformers import AutoModelForCausalLM

    from rlcore.training.tiny_models import build_tokenizer, tiny_qwen2_config

    folder = tmp_path / "short-context"
    tok = build_tokenizer(folder)
    AutoModelForCausalLM.from_config(tiny_qwen2_config(tok, max_position_embeddings=24)).save_pretrained(folder)
    long_prompt = " ".join(f"w{i}" for i in range(40))
    from transformers import AutoTokenizer

    n_tokens = len(AutoTokenizer.from_pretrained(folder)(long_prompt, add_special_tokens=False)["input_ids"])
    prompts = _prompts(tmp_path / "p.jsonl", n=1, extra=[{"prompt": long_prompt}])
    spec = GenerationSpec(prompts=prompts, output=tmp_path / "o.jsonl", max_new_tokens=8,
                          policies=[{"kind": "folder", "location": str(folder), "name": "short"}])
    with pytest.raises(UserError) as refused:
        generate(spec)
    assert str(refused.value).startswith(
        f"{prompts}:2: the prompt is {n_tokens} tokens; policy 'short' has a context of 24 tokens and "
        "max_new_tokens is 8, so a prompt may have at most 16.")
    assert "prompt_overflow: truncate_left" in str(refused.value) and not spec.output.read_text()
    generate(spec.model_copy(update={"prompt_overflow": "truncate_left"}))
    by_line = {l["prompt_line"]: l for l in _lines(spec.output)}
    assert by_line[2]["truncated_tokens"] == n_tokens - 16 and by_line[2]["prompt_tokens"] == 16
    assert by_line[1]["truncated_tokens"] == 0


def test_vllm_without_the_package_says_so(tiny_lm, tmp_path):
    pytest.importorskip("transformers")
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    spec = GenerationSpec(prompts=_prompts(tmp_path / "p.jsonl"), output=tmp_path / "o.jsonl", backend="vllm",
                          policies=[{"kind": "folder", "location": str(tiny_lm)}])
    with pytest.raises(UserError, match="backend 'vllm' needs the vllm package, which is not installed here"):
        generate(spec)
