"""A judge run inside the worker: a Hugging Face causal LM, batched, greedy, with token log-probabilities.

The model is loaded from a hub id or a local directory (:func:`load_causal_lm`). Prompts are formatted
with the tokenizer's chat template when it has one (else the message texts are joined), sorted by
length, padded on the left and generated in batches of ``batch_size`` with greedy decoding.
:func:`generate_with_logprobs` keeps, for every generated token, its log-probability and the
``top_logprobs`` most likely alternatives (from the raw logits, before any logits processor), in the
same shape an OpenAI-compatible server returns them; the judge then takes its confidence from the
probability of the verdict token exactly as :class:`~rlcore.judges.openai_compat.OpenAICompatJudge` does.

Heavy imports (torch, transformers) happen inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from rlcore.errors import UserError
from rlcore.judges.base import PromptedJudge
from rlcore.judges.confidence import TokenAlternative, TokenLogprob
from rlcore.judges.openai_compat import ChatOutcome, JudgeCallError, LogprobJudgeMixin

if TYPE_CHECKING:
    from rlcore.judges.prompts import JudgeTemplates

Conversation = list[dict[str, str]]


class LocalHFSettings(BaseModel):
    """Which local model judges, and how it generates."""

    model_config = ConfigDict(frozen=True)

    model: str = Field(description="a hub id or a local directory holding the model and its tokenizer")
    device: str | None = Field(None, description="'cuda', 'cuda:1', 'cpu'...; None: the first GPU if any, else CPU")
    dtype: str | None = Field(None, description="'bfloat16', 'float16', 'float32'; None: bfloat16 on GPU, float32 on CPU")
    batch_size: int = Field(8, ge=1, description="prompts generated together")
    max_new_tokens: int = Field(512, ge=1, description="most tokens the judge may write per reply")
    top_logprobs: int = Field(5, ge=1, le=50, description="alternatives kept per generated token")
    system_prompt: str | None = Field(None, description="an optional system message before the judge prompt")


class Generation(BaseModel):
    """One greedy generation with its tokens' log-probabilities."""

    text: str = Field(description="the generated text, special tokens removed")
    tokens: list[TokenLogprob] = Field(description="each generated token (until end of sequence) with alternatives")
    finish_reason: str = Field(description="'stop' when the model ended the sequence, 'length' when cut at the limit")


def load_causal_lm(model: str, *, device: str | None = None, dtype: str | None = None) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer (left padding, a pad token) in eval mode on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise UserError(f"dtype: {dtype!r} is not a torch dtype (use bfloat16, float16 or float32)")
    local = Path(model).expanduser()
    source = str(local) if local.exists() else model
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        where = "local directory" if local.exists() else "hub id (no such local directory either)"
        raise UserError(f"model: could not load {model!r} as a {where}: {exc}") from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm.to(device).eval()
    return lm, tokenizer


def format_conversation(tokenizer: Any, conversation: Conversation | str) -> str:
    """The text the model continues: the chat template with a generation prompt, or the contents joined."""
    if isinstance(conversation, str):
        conversation = [{"role": "user", "content": conversation}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    return "\n\n".join(m["content"] for m in conversation) + "\n\n"


def generate_with_logprobs(model: Any, tokenizer: Any, conversations: Sequence[Conversation | str], *,
                           max_new_tokens: int, top_logprobs: int = 5, batch_size: int = 8) -> list[Generation]:
    """Greedy-generate a reply to each conversation, batched; one :class:`Generation` each, in order."""
    import torch

    texts = [format_conversation(tokenizer, c) for c in conversations]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])  # similar lengths share a batch: less padding
    eos_ids = _eos_ids(model, tokenizer)
    results: list[Generation | None] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        with torch.inference_mode():
            out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens, output_logits=True,
                                 return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=sorted(eos_ids) or None)
        new_ids = out.sequences[:, batch["input_ids"].shape[1]:]
        logprobs = torch.stack(out.logits, dim=1).float().log_softmax(dim=-1)  # (batch, steps, vocab)
        k = min(top_logprobs, logprobs.shape[-1])
        top_values, top_ids = logprobs.topk(k, dim=-1)
        for row, index in enumerate(chunk):
            ids = new_ids[row].tolist()
            stop = next((t for t, token_id in enumerate(ids) if token_id in eos_ids), None)
            kept = ids[:stop] if stop is not None else ids
            tokens = []
            for t, token_id in enumerate(kept):
                alternatives = top_ids[row, t].tolist()
                decoded = tokenizer.batch_decode([[token_id], *[[a] for a in alternatives]])
                tokens.append(TokenLogprob(
                    token=decoded[0], logprob=float(logprobs[row, t, token_id]),
                    top=[TokenAlternative(token=text, logprob=float(value))
                         for text, value in zip(decoded[1:], top_values[row, t].tolist())]))
            results[index] = Generation(text=tokenizer.decode(kept, skip_special_tokens=True), tokens=tokens,
                                        finish_reason="stop" if stop is not None else "length")
    return [r for r in results if r is not None]


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class LocalHFJudge(LogprobJudgeMixin, PromptedJudge):
    """A :class:`~rlcore.judges.base.Judge` that runs a local causal LM (loaded once, on construction).

    A batch that fails (out of memory, say) fails only its own prompts; their results carry the error.
    """

    def __init__(self, settings: LocalHFSettings, templates: "JudgeTemplates | None" = None,
                 name: str | None = None, *, model: Any = None, tokenizer: Any = None) -> None:
        super().__init__(templates, name or f"local-hf:{settings.model}")
        self.settings = settings
        if model is None or tokenizer is None:
            model, tokenizer = load_causal_lm(settings.model, device=settings.device, dtype=settings.dtype)
        self.model, self.tokenizer = model, tokenizer

    def __repr__(self) -> str:
        return f"LocalHFJudge(model={self.settings.model!r})"

    def complete(self, prompts: Sequence[str]) -> list[str | BaseException]:
        s = self.settings
        system = [{"role": "system", "content": s.system_prompt}] if s.system_prompt else []
        conversations = [[*system, {"role": "user", "content": p}] for p in prompts]
        replies: list[str | BaseException | None] = [None] * len(prompts)
        outcomes: list[ChatOutcome | None] = [None] * len(prompts)
        # similar lengths share a batch (less padding); one generate call per batch, so a failure costs only it
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        for start in range(0, len(order), s.batch_size):
            chunk = order[start:start + s.batch_size]
            try:
                generations = generate_with_logprobs(self.model, self.tokenizer, [conversations[i] for i in chunk],
                                                     max_new_tokens=s.max_new_tokens, top_logprobs=s.top_logprobs,
                                                     batch_size=s.batch_size)
            except (RuntimeError, ValueError) as exc:
                error = f"local generation failed: {type(exc).__name__}: {str(exc)[:200]}"
                for i in chunk:
                    replies[i], outcomes[i] = JudgeCallError(error), ChatOutcome(error=error, attempts=1)
                continue
            for i, g in zip(chunk, generations):
                replies[i] = g.text
                outcomes[i] = ChatOutcome(content=g.text, tokens=g.tokens, finish_reason=g.finish_reason, attempts=1)
        self._record(outcomes)  # type: ignore[arg-type]  (every slot is filled above)
        return replies  # type: ignore[return-value]


__all__ = ["Generation", "LocalHFJudge", "LocalHFSettings", "format_conversation", "generate_with_logprobs",
           "load_causal_lm"]
