"""A learnable stepwise data set for the process-reward tests and bench (no model hub here)."""

import random

from rlcore.training import tiny_models


def synthetic_steps(n: int, seed: int = 0) -> list[dict]:
    """Stepwise rows whose steps are bad from the first one saying "sorry" on (a wrong step spoils the rest,
    as in Math-Shepherd labels); about a third of the responses are right throughout."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = rng.randint(2, 5)
        wrong_at = rng.choice([None, None] + list(range(k)))
        steps = []
        for j in range(k):
            words = rng.sample(tiny_models.WORDS[:300], 3)
            if j == wrong_at:
                words.insert(rng.randint(0, 3), "sorry")
            steps.append(" ".join(words))
        labels = [wrong_at is None or j < wrong_at for j in range(k)]
        rows.append({"prompt": f"question {i}", "completions": steps, "labels": labels, "response_id": f"r{i}"})
    return rows
