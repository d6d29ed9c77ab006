"""A planted over-optimisation case for the webapp and browser tests: the proxy spec pays per word (plus an
always-satisfied format rule), the gold judge reads content, which improves until step 200 and then
drowns in repeated padding. As rows of rlcore's SampleScore (what `analysis overopt --samples` reads)."""

STEPS = (0, 100, 200, 300, 400)
WORDS = {0: 10, 100: 20, 200: 30, 300: 60, 400: 90}
GOLD = {0: 0.30, 100: 0.50, 200: 0.70, 300: 0.45, 400: 0.20}


def planted_samples(prompts: int = 8) -> list[dict]:
    rows = []
    for step in STEPS:
        for i in range(prompts):
            unique = min(WORDS[step], 10 + step // 20)
            text = " ".join([f"w{i}_{k}" for k in range(unique)] + ["very", "good"] * ((WORDS[step] - unique) // 2))
            length_bonus = 0.05 * len(text.split())
            rows.append({"checkpoint": f"checkpoint-{step}", "step": step, "prompt_id": f"p{i}",
                         "response_id": f"r{step}-{i}", "prompt": f"Explain topic {i}.", "completion": text,
                         "proxy": length_bonus + 1.0, "components": {"length_bonus": length_bonus, "format": 1.0},
                         "gold": GOLD[step] + (0.02 if i % 2 else -0.02),
                         "logprobs": [-1.0 + step / 1000] * 4, "ref_logprobs": [-1.0] * 4})
    return rows
