"""Demo data for a fresh install: a small, realistic dataset and comparisons ready to annotate."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from webapp.datasets.models import Dataset

DEMO_DATASET = "Demo: assistant answers"

ROWS = [
    {"prompt": "What is the boiling point of water at sea level in Fahrenheit?",
     "responses": [{"text": "212 °F (100 °C).", "model": "assistant-v2"},
                   {"text": "Water boils at 100 degrees, which is about 180 °F.", "model": "assistant-v1"}],
     "topic": "science"},
    {"prompt": "Write a Python function that reverses a string.",
     "responses": [{"text": "```python\ndef reverse(s: str) -> str:\n    return s[::-1]\n```", "model": "assistant-v2"},
                   {"text": "You can loop over the characters:\n\n```python\ndef reverse(s):\n    out = ''\n"
                            "    for ch in s:\n        out = ch + out\n    return out\n```\nThis is O(n²).",
                    "model": "assistant-v1"},
                   {"text": "Use `reversed(s)`.", "model": "baseline"}],
     "topic": "code"},
    {"prompt": [{"role": "system", "content": "You are a concise travel assistant."},
                {"role": "user", "content": "I have one day in Lisbon. What should I see?"}],
     "responses": [{"text": "- **Morning:** Alfama and the castle\n- **Afternoon:** Belém (tower, monastery, pastéis)\n"
                            "- **Evening:** sunset at a miradouro, dinner in Bairro Alto", "model": "assistant-v2"},
                   {"text": "Lisbon is the capital of Portugal and has a population of about 550,000 people.",
                    "model": "assistant-v1"}],
     "topic": "travel"},
    {"prompt": "Summarise in one sentence: The meeting moved from Tuesday to Thursday because the venue flooded.",
     "responses": [{"text": "The meeting is now on Thursday because the venue flooded.", "model": "assistant-v2"},
                   {"text": "There was a meeting.", "model": "baseline"}],
     "topic": "summarisation"},
    {"prompt": "Is it safe to mix bleach and ammonia for cleaning?",
     "responses": [{"text": "No. Mixing them releases toxic chloramine gas. Use one product at a time and "
                            "ventilate the room.", "model": "assistant-v2"},
                   {"text": "Yes, it makes a stronger cleaner.", "model": "baseline"}],
     "topic": "safety"},
    {"prompt": "Translate to French: 'Where is the train station?'",
     "responses": [{"text": "Où est la gare ?", "model": "assistant-v2"},
                   {"text": "Où est la station de train ?", "model": "assistant-v1"}],
     "topic": "translation"},
    {"prompt": "Explain recursion to a ten-year-old.",
     "responses": [{"text": "Imagine a set of Russian dolls: to find the smallest, you open one doll, and inside "
                            "is a smaller doll you open the same way, until there is nothing left to open.",
                    "model": "assistant-v2"},
                   {"text": "Recursion is when a function calls itself with a base case and a recursive case, "
                            "forming a call stack.", "model": "assistant-v1"}],
     "topic": "education"},
    {"prompt": "What is 17 × 23?",
     "responses": [{"text": "391", "model": "assistant-v2"}, {"text": "17 × 23 = 401", "model": "assistant-v1"}],
     "topic": "math"},
]


def seed_demo_comparisons(*, project, user) -> Dataset:
    """Import the demo rows and build all pairs with overlap 2 (idempotent)."""
    from webapp.annotation.services import comparisons_build
    from webapp.datasets.services import dataset_create, dataset_import_run

    existing = Dataset.objects.filter(project=project, name=DEMO_DATASET).first()
    if existing is not None:
        return existing
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demo.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS))
        dataset = dataset_create(project=project, user=user, name=DEMO_DATASET, path=path)
        dataset = dataset_import_run(dataset_id=dataset.pk)
    comparisons_build(project=project, dataset=dataset, strategy="all_pairs", overlap=2)
    return dataset
