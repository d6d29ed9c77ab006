"""The local Hugging Face judge on a tiny model trained here to always answer "Verdict: A" (a position-biased judge)."""

import random

import pytest

from rlcore.errors import UserError
from rlcore.judges.base import PairRequest
from rlcore.judges.debias import compare_both_orders
from rlcore.judges.local_hf import LocalHFJudge, LocalHFSettings, generate_with_logprobs, load_causal_lm
from rlcore.judges.openai_compat import LogprobPairVerdict, OpenAICompatJudge, OpenAICompatSettings
from rlcore.judges.prompts import JudgePromptTemplate, JudgeTemplates
from rlcore.judges.testing_server import ChatCompletionsServer, HFChatPolicy

REPLY = "Verdict: A\nStrength: 2"
SHORT = JudgeTemplates(compare=JudgePromptTemplate(name="short", mode="compare",
                                                   text="{prompt}\n[A] {response_a}\n[B] {response_b}\n"))
PAIRS = [PairRequest(request_id=str(i), prompt=f"w{i}", response_a="w1 w2 " * (i + 1), response_b="w3 thanks")
         for i in range(4)]


def build_always_a_judge_model(directory, steps=80):
    """A 2-layer Qwen2 with a tokenizer trained here, fine-tuned until greedy decoding says REPLY."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from rlcore.training.tiny_models import tiny_qwen2_config, train_tokenizer

    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)] + ["thanks", "Verdict:", "A", "B", "Strength:", "1", "2", "3", "tie"]
    tok = train_tokenizer([" ".join(rng.choices(words, k=24)) + "\n" for _ in range(300)], vocab_size=400)
    tok.save_pretrained(str(directory))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_qwen2_config(tok, max_position_embeddings=256))
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    reply = tok(REPLY, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        prompts = []
        for _ in range(4):
            a, b = (" ".join(rng.choices(words[:41], k=rng.randint(1, 6))) for _ in range(2))
            text = tok.apply_chat_template([{"role": "user", "content": SHORT.compare.render(
                prompt=rng.choice(words), response_a=a, response_b=b, criterion="")}],
                add_generation_prompt=True, tokenize=False)
            prompts.append(tok(text, add_special_tokens=False)["input_ids"])
        width = max(len(p) for p in prompts) + len(reply)
        ids = torch.full((4, width), tok.pad_token_id)
        labels = torch.full((4, width), -100)
        mask = torch.zeros((4, width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            start = width - len(prompt) - len(reply)
            ids[row, start:] = torch.tensor(prompt + reply)
            mask[row, start:] = 1
            labels[row, width - len(reply):] = torch.tensor(reply)
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_always_a_judge_model(tmp_path_factory.mktemp("always-a-judge"))


@pytest.fixture(scope="module")
def judge(model_dir):
    return LocalHFJudge(LocalHFSettings(model=str(model_dir), device="cpu", max_new_tokens=12, batch_size=3), SHORT)


def test_it_judges_with_a_local_model_and_a_logprob_confidence(judge):
    results = judge.compare(PAIRS)
    assert [r.request_id for r in results] == ["0", "1", "2", "3"]
    for result in results:
        assert result.raw_reply == REPLY and result.error is None
        assert isinstance(result, LogprobPairVerdict)
        assert (result.verdict, result.strength) == ("A", 2)
        assert 0.5 < result.confidence <= 1.0 and result.confidence == result.label_probabilities["A"]
        assert result.rendered_prompt.startswith(PAIRS[int(result.request_id)].prompt + "\n[A] w1 w2")


def test_it_generates_the_same_in_a_left_padded_batch_as_alone(judge):
    conversations = [[{"role": "user", "content": SHORT.compare.render(prompt="w1", response_a=p.response_a,
                                                                       response_b=p.response_b, criterion="")}]
                     for p in PAIRS]
    together = generate_with_logprobs(judge.model, judge.tokenizer, conversations, max_new_tokens=12, batch_size=4)
    alone = [generate_with_logprobs(judge.model, judge.tokenizer, [c], max_new_tokens=12)[0] for c in conversations]
    assert [g.text for g in together] == [g.text for g in alone]
    for batched, single in zip(together, alone):
        assert [t.token for t in batched.tokens] == [t.token for t in single.tokens]
        assert batched.tokens[2].logprob == pytest.approx(single.tokens[2].logprob, abs=1e-4)
        assert batched.finish_reason == "stop"


def test_it_exposes_the_position_bias_of_an_always_a_judge(judge):
    labels = compare_both_orders(judge, PAIRS[:2])
    assert all(label.position_bias and label.verdict == "tie" for label in labels)
    assert all(label.confidence_source == "logprobs" for label in labels)


def test_it_serves_the_local_model_over_the_chat_completions_protocol(model_dir, judge):
    local = judge.compare(PAIRS[:2])
    with ChatCompletionsServer(HFChatPolicy(str(model_dir), device="cpu")) as server:
        remote_judge = OpenAICompatJudge(OpenAICompatSettings(base_url=server.base_url, model="tiny", max_tokens=12,
                                                              top_logprobs=5), SHORT)
        remote = remote_judge.compare(PAIRS[:2])
    assert [r.raw_reply for r in remote] == [r.raw_reply for r in local]
    assert [r.confidence for r in remote] == pytest.approx([r.confidence for r in local], abs=1e-4)


def test_it_names_a_model_it_cannot_load(tmp_path):
    with pytest.raises(UserError, match="could not load"):
        load_causal_lm(str(tmp_path), device="cpu")
