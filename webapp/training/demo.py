"""The demo policy and prompt set that ``manage.py seed_demo`` adds, so GRPO runs on a fresh, offline machine.

- The demo policy is rlcore's ``build_demo_policy`` saved under ``VAR_DIR/models/demo-policy`` (inside the
  default MODEL_ROOTS, so a launch accepts it), built once and reused.
- The demo prompt set holds enough prompts for one rollout of the default preset: ``dapo`` splits each
  rollout into 16 mini-batches, so with the launch form's defaults one rollout needs
  per_device_train_batch_size 8 x 16 steps per generation / 8 generations = 16 prompts
  (``GRPOTrainSpec.prompts_per_rollout``); the set has twice that, two rollouts per epoch.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from django.conf import settings

from webapp.datasets.models import Dataset

DEMO_PROMPTS = "Demo: prompts for GRPO"

PROMPTS = [
    "How do I boil an egg so the yolk stays soft?",
    "Give me three tips for a first job interview.",
    "What is the difference between weather and climate?",
    "Explain what a Python list comprehension is, with one example.",
    "Suggest a name for a small bakery that sells sourdough.",
    "How many minutes are there in a day?",
    "Write a polite reply declining a meeting invitation.",
    "What should I pack for a weekend hike in autumn?",
    "Why is the sky blue? Answer in two sentences.",
    "How do I keep basil alive on a windowsill?",
    "Summarise the plot of Romeo and Juliet in one sentence.",
    "What is a good way to start learning to play the guitar?",
    "Convert 5 kilometres to miles.",
    "How do I politely ask a neighbour to turn the music down?",
    "Explain recursion using a short example.",
    "What are the symptoms of dehydration?",
    "Give me a simple recipe for tomato soup.",
    "How can I make my passwords safer?",
    "What does HTTP status code 404 mean?",
    "Recommend a short book for a long train journey.",
    "How do I apologise to a friend for missing their birthday?",
    "What is 12 multiplied by 15?",
    "Explain photosynthesis to a ten-year-old.",
    "How do I remove a coffee stain from a shirt?",
    "Write a one-line thank-you note for a gift.",
    "What is the capital of Australia?",
    "How do I stop procrastinating on a big task?",
    "Describe a quick stretching routine for desk workers.",
    "Is it safe to charge a phone overnight?",
    "What is the difference between a virus and a bacterium?",
    "How do I write a clear email subject line?",
    "Translate 'good morning' into Spanish and German.",
]


def demo_policy_dir() -> Path:
    """Where seed_demo keeps the demo policy: under VAR_DIR/models, a default MODEL_ROOTS folder."""
    return Path(settings.VAR_DIR) / "models" / "demo-policy"


def seed_demo_policy() -> Path | None:
    """Build the demo policy once (a few seconds on a CPU) and return its folder; later calls reuse it.

    None when the training libraries are not installed (a web-only install): there is nothing to run GRPO with.
    """
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return None
    from rlcore.training.demo_policy import build_demo_policy
    from webapp.annotation.demo import ROWS

    texts = [*PROMPTS]
    for row in ROWS:  # the demo project's own text, so its words are single tokens
        prompt = row["prompt"]
        texts.append(prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt))
        texts.extend(response["text"] for response in row["responses"])
    return build_demo_policy(demo_policy_dir(), texts)


def seed_demo_prompts(*, project, user) -> Dataset:
    """Import the demo prompt set into ``project`` (idempotent)."""
    from webapp.datasets.services import dataset_create, dataset_import_run

    existing = Dataset.objects.filter(project=project, name=DEMO_PROMPTS).first()
    if existing is not None:
        return existing
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demo-prompts.jsonl"
        path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
        dataset = dataset_create(project=project, user=user, name=DEMO_PROMPTS, path=path)
        return dataset_import_run(dataset_id=dataset.pk)
