"""Policy objectives TRL 1.16 does not have, as loss functions and one ``GRPOTrainer`` subclass.

- **DHPO** (Min et al., "Orchestrating Tokens and Sequences: Dynamic Hybrid Policy Optimization for RLVR",
  arXiv:2601.05607): token-level ratios r_t = exp(log pi(y_t) - log pi_old(y_t)) and the sequence-level
  (GSPO) ratio s = exp(mean_t(log pi - log pi_old)) are each clipped in their own range, then mixed per
  token with a weight w_t: ``average`` takes w_t = 1/2, ``entropy`` takes w_t = H_t / (H_t + mean H of the
  sequence) (detached). The per-token loss is the PPO surrogate on the mixed ratios::

      m_t  = w_t r_t + (1 - w_t) s                       (unclipped mix)
      m'_t = w_t clip(r_t, 1-e_tok, 1+e_tok_hi) + (1 - w_t) clip(s, 1-e_seq, 1+e_seq_hi)
      l_t  = -min(m_t A, m'_t A)

  aggregated like DAPO (sum over the accumulated batch's completion tokens / their number). The paper's code
  was not released; the branch clipping follows its abstract and the entropy weight is rlcore's stated choice.
- **Mass-covering divergence to the initial policy** (Li et al., "The Choice of Divergence ...", DPH-RL,
  arXiv:2509.07430): an f-divergence D_f(pi_theta || pi_0) = E_{y ~ pi_0}[f(pi_theta(y)/pi_0(y))] estimated per
  token on completions pi_0 sampled once before training (their log-probabilities stored, so no reference model
  is kept), with f(u) = -log u (forward KL(pi_0 || pi_theta)) or f(u) = (u log u - (1+u) log((1+u)/2)) / 2
  (Jensen-Shannon). The mean over the sampled tokens, times ``coef``, is added to the policy loss. DPH-RL applies
  it to a "near-perfect" subset of prompts; rlcore applies it to the first ``num_samples`` prompts.

>>> import torch
>>> f_divergence(torch.tensor([0.0]), torch.tensor([0.0]), torch.ones(1), "js").item()  # same policy: 0
0.0
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from trl import GRPOTrainer

INITIAL_SAMPLES = "initial_policy_samples.pt"


def dhpo_per_token_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, entropies: torch.Tensor | None, *, mixing: str, epsilon_token: float,
                        epsilon_token_high: float, epsilon_sequence: float,
                        epsilon_sequence_high: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DHPO's per-token loss (B, T) and what it rests on: the mix weight and which branch clipped.

    ``logps``/``old_logps``/``mask``/``entropies`` are (B, T), ``advantages`` (B,) or (B, 1).
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    mask = mask.to(logps.dtype)
    log_ratio = logps - old_logps
    token_ratio = torch.exp(log_ratio)
    sequence_ratio = torch.exp((log_ratio * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0))
    if mixing == "average":
        weight = torch.full_like(token_ratio, 0.5)
    elif mixing == "entropy":
        h = entropies.detach()
        mean_h = (h * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1.0)
        weight = h / (h + mean_h).clamp(min=1e-8)
    else:
        raise ValueError(f"unknown DHPO mixing {mixing!r}")
    clipped_token = torch.clamp(token_ratio, 1 - epsilon_token, 1 + epsilon_token_high)
    clipped_sequence = torch.clamp(sequence_ratio, 1 - epsilon_sequence, 1 + epsilon_sequence_high)
    mixed = weight * token_ratio + (1 - weight) * sequence_ratio
    mixed_clipped = weight * clipped_token + (1 - weight) * clipped_sequence
    loss = -torch.min(mixed * advantages, mixed_clipped * advantages)
    stats = {"mix_weight": weight, "token_clipped": (clipped_token != token_ratio).to(logps.dtype),
             "sequence_clipped": (clipped_sequence != sequence_ratio).to(logps.dtype).expand_as(token_ratio)}
    return loss, stats


def f_divergence(logps: torch.Tensor, initial_logps: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """The per-token f-divergence estimate D_f(pi_theta || pi_0) on tokens pi_0 sampled: the masked mean of f(u),
    u = exp(logps - initial_logps). ``kind`` is ``forward_kl`` or ``js`` (see the module docstring)."""
    mask = mask.to(logps.dtype)
    log_u = logps - initial_logps
    if kind == "forward_kl":
        per_token = -log_u
    elif kind == "js":
        u = torch.exp(log_u)
        # u log u - (1+u) log((1+u)/2), with log(1+u) as softplus(log u) so a tiny or huge u stays finite
        per_token = 0.5 * (u * log_u - (1 + u) * (torch.nn.functional.softplus(log_u) - math.log(2.0)))
    else:
        raise ValueError(f"unknown divergence kind {kind!r}")
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


class RlcoreGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` plus rlcore's objectives: DHPO as the policy loss and/or the DPH-RL divergence term.

    Built only when a spec asks for one (``needs_rlcore_trainer``), so every other run is plain TRL.
    """

    def __init__(self, *args, dhpo: Any = None, divergence: Any = None, initial_samples_path: Path | None = None,
                 **kwargs):
        self.dhpo = dhpo
        self.divergence = divergence
        super().__init__(*args, **kwargs)
        self._initial_samples = None
        if divergence is not None:
            self._initial_samples = load_or_sample_initial(self, initial_samples_path, divergence.num_samples)
            self._divergence_cursor = 0

    def _compute_loss(self, model, inputs):
        loss = self._dhpo_loss(model, inputs) if self.dhpo is not None else super()._compute_loss(model, inputs)
        if self._initial_samples is not None and self.model.training:
            loss = loss + self._divergence_loss(model)
        return loss

    def _dhpo_loss(self, model, inputs):
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True)
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        d = self.dhpo
        per_token_loss, stats = dhpo_per_token_loss(
            logps, old, inputs["advantages"], mask, entropies, mixing=d.mixing, epsilon_token=d.epsilon_token,
            epsilon_token_high=d.epsilon_token_high, epsilon_sequence=d.epsilon_sequence,
            epsilon_sequence_high=d.epsilon_sequence_high)
        if self.beta != 0.0:
            ref = inputs["ref_per_token_logps"]
            per_token_kl = torch.exp(ref - logps) - (ref - logps) - 1
            per_token_loss = per_token_loss + self.beta * per_token_kl
        mode = "train" if self.model.training else "eval"
        # DAPO's normaliser: tokens of the whole accumulated batch, as TRL's dapo branch computes it
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        loss = (per_token_loss * mask).sum() / normalizer

        def masked_mean(x):
            totals = self.accelerator.reduce(torch.stack([(x * mask).sum(), mask.sum().to(x.dtype)]), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        self._metrics[mode]["entropy"].append(masked_mean(entropies))
        self._metrics[mode]["dhpo/mix_weight_mean"].append(masked_mean(stats["mix_weight"]))
        self._metrics[mode]["dhpo/token_clip_ratio"].append(masked_mean(stats["token_clipped"]))
        self._metrics[mode]["dhpo/sequence_clip_ratio"].append(masked_mean(stats["sequence_clipped"]))
        if self.beta != 0.0:
            self._metrics[mode]["kl"].append(masked_mean(per_token_kl))
        return loss

    def _divergence_loss(self, model):
        samples = self._initial_samples
        n = samples["completion_ids"].size(0)
        take = [(self._divergence_cursor + i) % n for i in range(min(self.divergence.batch_size, n))]
        self._divergence_cursor = (self._divergence_cursor + len(take)) % n
        device = self.accelerator.device
        batch = {k: v[take].to(device) for k, v in samples.items()}
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        logps, _, _ = self._get_per_token_logps_and_entropies(model, input_ids, attention_mask,
                                                              batch["completion_ids"].size(1))
        value = f_divergence(logps, batch["initial_logps"], batch["completion_mask"], self.divergence.kind)
        self._metrics["train"][f"divergence/{self.divergence.kind}"].append(value.item())
        # the same scale on every micro-batch of an accumulation window, as TRL scales its entropy bonus
        return self.divergence.coef * value / self.current_gradient_accumulation_steps


@torch.no_grad()
def load_or_sample_initial(trainer: GRPOTrainer, path: Path | None, num_samples: int) -> dict[str, torch.Tensor]:
    """Completions of the initial policy for the divergence term, with their per-token log-probabilities.

    Sampled once from the first ``num_samples`` prompts before any optimizer step and saved to ``path``; a resumed
    run loads that file, so the term keeps referring to the policy the run started from.
    """
    if path is not None and path.is_file():
        return torch.load(path)
    model = trainer.accelerator.unwrap_model(trainer.model)
    tokenizer = trainer.processing_class
    rows = [trainer.train_dataset[i] for i in range(min(num_samples, len(trainer.train_dataset)))]
    prompts = [r["prompt"] if isinstance(r["prompt"], str)
               else tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
               for r in rows]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    encoded = {k: v.to(trainer.accelerator.device) for k, v in encoded.items()}
    was_training = model.training
    model.eval()
    output = model.generate(**encoded, do_sample=True, temperature=trainer.temperature,
                            max_new_tokens=trainer.max_completion_length, pad_token_id=tokenizer.pad_token_id)
    completion_ids = output[:, encoded["input_ids"].size(1):]
    is_eos = completion_ids == tokenizer.eos_token_id
    first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], is_eos.size(1),
                                                                                    dtype=torch.long))
    completion_mask = (torch.arange(is_eos.size(1), device=is_eos.device)[None] <= first_eos[:, None]).long()
    input_ids = torch.cat([encoded["input_ids"], completion_ids], 1)
    attention_mask = torch.cat([encoded["attention_mask"], completion_mask], 1)
    logps, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, attention_mask, completion_ids.size(1))
    model.train(was_training)
    samples = {"prompt_ids": encoded["input_ids"].cpu(), "prompt_mask": encoded["attention_mask"].cpu(),
               "completion_ids": completion_ids.cpu(), "completion_mask": completion_mask.cpu(),
               "initial_logps": logps.float().cpu()}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(samples, path)
    print(f"rlcore: divergence: sampled {len(rows)} completions of the initial policy "
          f"({int(completion_mask.sum())} tokens) into {path}", file=sys.stderr, flush=True)
    return samples


def needs_rlcore_trainer(spec: Any) -> bool:
    """Whether a GRPO spec uses an objective only :class:`RlcoreGRPOTrainer` has."""
    return spec.objective_settings()["loss_type"] == "dhpo" or spec.divergence is not None


def summary(spec: Any) -> str:
    """One log line naming the objective a run trains with (the preset's values and the spec's overrides)."""
    settings = {k: v for k, v in spec.objective_settings().items() if v is not None}
    extra = {"dhpo": spec.dhpo.model_dump() if spec.dhpo else None,
             "divergence": spec.divergence.model_dump() if spec.divergence else None}
    return "objective " + json.dumps({**settings, **{k: v for k, v in extra.items() if v}}, sort_keys=True)
