"""Checks on a policy before anything is generated or registered: is this folder a causal LM?

Cheap (reads config.json only, no weights), so the webapp can refuse a bad folder at registration
time and the generate command can refuse it before loading anything.
"""

from __future__ import annotations

import json
from pathlib import Path


def causal_lm_problem(folder: str | Path) -> str | None:
    """Why ``folder`` cannot be used as a policy (a text-generating causal LM), or None.

    >>> import tempfile, json; d = Path(tempfile.mkdtemp())
    >>> causal_lm_problem(d).endswith("give a saved Hugging Face causal LM folder.")
    True
    >>> _ = (d / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    >>> "not a causal language model" in causal_lm_problem(d)
    True
    >>> _ = (d / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    >>> causal_lm_problem(d) is None
    True
    """
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        return f"'{folder}' holds no config.json: give a saved Hugging Face causal LM folder."
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        return f"'{config_path}' is not readable JSON ({exc}): save the model again with save_pretrained."
    architectures = config.get("architectures") or []
    if any(name.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for name in architectures):
        return None
    model_type = config.get("model_type", "")
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        if not architectures and model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
            return None
    except ImportError:  # a web-only install: trust the architectures list alone
        pass
    what = ", ".join(architectures) or f"model_type {model_type or '?'}"
    return (f"'{folder}' is not a causal language model ({what}): a policy must generate text; give a folder "
            "saved from an AutoModelForCausalLM (e.g. a GRPO run's model/ or a checkpoint).")
