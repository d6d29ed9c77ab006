"""A demo GRPO policy built on this machine: random weights and a tokenizer trained on local text.

No model hub may be reachable, yet a newcomer should be able to run GRPO end to end. ``build_demo_policy``
saves a small Qwen2-shaped causal LM (2 layers, hidden size 64) with random weights, and a byte-level BPE
tokenizer trained here on the text it is given, as a plain Hugging Face model folder. It generates in
milliseconds and learns nothing useful: it proves the path, not a reward. The folder carries a marker
file, so everywhere it appears it is named :data:`DEMO_POLICY_LABEL`.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp()) / "demo-policy"
>>> demo_policy_label(folder) is None
True
>>> built = build_demo_policy(folder, ["Say thanks politely.", "What is 2 + 2?"])
>>> demo_policy_label(built), (built / "config.json").is_file()
('demo policy: random weights', True)
>>> build_demo_policy(folder, []) == built  # idempotent: an existing demo policy is reused
True
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

DEMO_POLICY_LABEL = "demo policy: random weights"
MARKER_FILE = "rlcore_demo_policy.json"
# ChatML-like, so conversational prompts (message lists) work as with Qwen-style instruct models
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
# a little general text, so the tokenizer has common words even when the caller's text is short
BASE_TEXT = [
    "Thanks for asking. Here is a short answer to your question, please let me know if you need more.",
    "You can do it in three steps: first read the question, then check the facts, then answer briefly.",
    "Sorry, I am not sure. The answer depends on the details you give me.",
    "Yes. No. Maybe. It is correct. It is wrong. Here is why, in one sentence.",
]


def demo_policy_label(location: str | Path) -> str | None:
    """:data:`DEMO_POLICY_LABEL` when ``location`` is a folder built by ``build_demo_policy``, else None.

    Cheap (one file check, no model import), so pages can label a policy wherever they show one.
    """
    try:
        marker = Path(location).expanduser() / MARKER_FILE
        return json.loads(marker.read_text()).get("label", DEMO_POLICY_LABEL) if marker.is_file() else None
    except (OSError, ValueError):
        return None


def build_demo_policy(directory: str | Path, texts: Iterable[str], *, vocab_size: int = 1024, seed: int = 0) -> Path:
    """Save the demo policy to ``directory`` unless one is there already; return the folder.

    The model is written to a temporary sibling and renamed into place, so an interrupted build never
    leaves a half-written folder that would be reused.
    """
    directory = Path(directory)
    weights = ("model.safetensors", "pytorch_model.bin")
    if (demo_policy_label(directory) and (directory / "config.json").is_file()
            and any((directory / name).is_file() for name in weights)):
        return directory
    if directory.exists():  # a damaged or stand-in folder under the demo's name: build it afresh
        import shutil

        shutil.rmtree(directory)
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast, Qwen2Config

    from rlcore.training.runtime import publish_directory, staging_directory

    corpus = [*BASE_TEXT, *(t for t in texts if t)]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # byte-level with the full byte alphabet: any text encodes, whatever the corpus held
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>")
    tokenizer.padding_side = "left"
    tokenizer.chat_template = CHAT_TEMPLATE
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_directory(directory)
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    (staging / MARKER_FILE).write_text(json.dumps({
        "label": DEMO_POLICY_LABEL, "architecture": "Qwen2ForCausalLM", "layers": 2, "hidden_size": 64,
        "vocab_size": len(tokenizer), "seed": seed,
        "note": "random weights and a tokenizer trained locally; built to run the GRPO path offline, not to learn"}))
    return publish_directory(staging, directory)
