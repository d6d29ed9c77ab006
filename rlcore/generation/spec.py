"""``GenerationSpec``: what ``python -m rlcore generate --spec GEN.yaml`` reads.

One definition for the CLI, the webapp's generation job and the API (they build it, the command validates it).

>>> spec = GenerationSpec(prompts="p.jsonl", output="o.jsonl", policies=[{"kind": "hub", "location": "a/b"}])
>>> spec.samples_per_prompt, spec.temperature, spec.top_p, spec.max_new_tokens, spec.prompt_overflow
(1, 1.0, 1.0, 128, 'refuse')
>>> len(spec.policies[0].generation_key(spec))
32
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from rlcore.errors import UserError, validation_message
from rlcore.judges.openai_compat import EndpointLimits
from rlcore.launch import LaunchSettings


class PolicyRef(EndpointLimits):
    """One policy to generate with: a local model folder, a hub id, or a model at an OpenAI-compatible endpoint
    (the endpoint's limits are ``EndpointLimits``'s, used by an endpoint only)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["folder", "hub", "endpoint"] = Field(description="where the policy lives")
    location: str = Field(min_length=1, description="folder path, hub id, or the model name at the endpoint")
    name: str = Field("", description="how responses name it (provenance); defaults to location")
    base_url: str = Field("", description="endpoint: API root, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(None, description="endpoint: environment variable holding the key")
    api_key_file: Path | None = Field(None, description="endpoint: a file holding the key, deleted once read "
                                                        "(how a worker hands a stored key over; never in argv)")
    registry_id: int | None = Field(None, description="the webapp's Policy id, carried into each line")
    step: int | None = Field(None, description="training step of this checkpoint, carried into each line")

    @model_validator(mode="after")
    def _endpoint_has_url(self) -> PolicyRef:
        if self.kind == "endpoint" and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("an endpoint policy needs base_url, the API root (e.g. http://127.0.0.1:8000/v1)")
        return self

    @property
    def label(self) -> str:
        return self.name or self.location

    def generation_key(self, spec: GenerationSpec) -> str:
        """Same policy + same sampling settings = same key: a re-run skips (prompt, key, sample) it already has."""
        identity = {"kind": self.kind, "location": self.location, "base_url": self.base_url.rstrip("/"),
                    "registry_id": self.registry_id, **spec.sampling()}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


class GenerationSettings(LaunchSettings):
    """How responses are sampled (see ``GenerationSpec``): the settings a person chooses."""

    samples_per_prompt: int = Field(1, ge=1, le=64, description="responses per prompt and policy")
    temperature: float = Field(1.0, ge=0, description="sampling temperature; 0 is greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    max_new_tokens: int = Field(128, ge=1, le=32768, description="most tokens per response")
    seed: int = Field(0, description="random seed (local: set once per run; endpoint: seed + sample index)")
    batch_size: int = Field(8, ge=1, le=1024, description="local: sequences per generate call; endpoint: "
                                                            "requests per round (up to max_concurrency in flight)")
    prompt_overflow: Literal["refuse", "truncate_left"] = Field(
        "refuse", description="a prompt longer than the model's context minus max_new_tokens: refuse the run "
                              "naming the line and token count, or keep its last tokens (the count dropped is "
                              "recorded per line)")
    backend: Literal["transformers", "vllm"] = Field("transformers", description="local generation engine")

    def sampling(self) -> dict:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens,
                "seed": self.seed}


class GenerationSpec(GenerationSettings):
    """Sample responses to a prompt set from one or more policies, into an appendable, resumable JSONL."""

    prompts: Path = Field(description="JSONL prompt set: one object per line with `prompt` (text or chat "
                                      "messages) and optionally `id` (else the line number is the prompt's key)")
    output: Path = Field(description="JSONL written one line per (prompt, policy, sample), appended as it goes; "
                                     "a re-run skips what is there")
    policies: list[PolicyRef] = Field(min_length=1, description="the policies to sample from, in turn")


def load_generation_spec(path: str | Path) -> GenerationSpec:
    """Read and validate a GenerationSpec (JSON/YAML); relative paths are read from the spec's folder."""
    from rlcore.training.specs import read_spec_file

    data = read_spec_file(path)
    try:
        spec = GenerationSpec.model_validate(data)
    except ValidationError as exc:
        raise UserError(validation_message(str(path), exc)) from exc
    base = Path(path).parent
    return spec.model_copy(update={name: getattr(spec, name) if getattr(spec, name).is_absolute()
                                   else base / getattr(spec, name) for name in ("prompts", "output")})
