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
    from transformers import AutoModelForCausalLM, GenerationConfig

    from rlcore.training.runtime import publish_directory, staging_directory
    from rlcore.training.tiny_models import tiny_qwen2_config, train_tokenizer

    tokenizer = train_tokenizer([*BASE_TEXT, *(t for t in texts if t)], vocab_size)
    config = tiny_qwen2_config(tokenizer, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                               num_key_value_heads=2, max_position_embeddings=2048)
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
