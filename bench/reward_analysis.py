"""Reward analysis at scale (issue 12): STARC matrix for 6 sources x 20,000 responses, and a
Dawid-Skene fit on 100,000 labels from 200 raters. Prints seconds and peak memory as JSON.

Targets (2-core machine): < 10 s and < 1 GB each. Each part runs in its own child process, so its
peak RSS is its own (ru_maxrss of the child, which includes the interpreter and numpy/scipy).

    .venv/bin/python bench/reward_analysis.py
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import time


def starc_part(queue) -> None:
    import numpy as np

    from rlcore.analysis.inputs import ScoreTable
    from rlcore.analysis.starc import compare_sources, drill_down

    rng = np.random.default_rng(0)
    n_prompts, per_prompt, k = 2000, 10, 6
    base = rng.normal(size=n_prompts * per_prompt)
    keys = [(f"p{p}", f"r{r}") for p in range(n_prompts) for r in range(per_prompt)]
    tables = [ScoreTable(name=f"source{j}", scores=dict(zip(keys, (base + rng.normal(scale=0.5 * j + 0.1, size=base.size)
                                                                    + rng.normal()).tolist())))
              for j in range(k)]
    start = time.perf_counter()
    comparison = compare_sources(tables)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    drill = drill_down(tables, "source0", "source5", top=20)
    drill_seconds = time.perf_counter() - start
    queue.put({"part": "starc", "sources": k, "responses": len(keys), "prompts": n_prompts,
               "seconds_matrix_and_rank_correlations": round(seconds, 3),
               "seconds_drill_down": round(drill_seconds, 3),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "distance_0_5": round(comparison.starc.distances[0][5], 4), "drill_discordant": drill.n_discordant})


def dawid_skene_part(queue) -> None:
    import numpy as np

    from rlcore.analysis.raters import fit_dawid_skene

    rng = np.random.default_rng(1)
    n_labels, n_raters, per_item = 100_000, 200, 5
    n_items = n_labels // per_item
    truth = rng.choice(3, size=n_items, p=[0.45, 0.4, 0.15])
    accuracy = rng.uniform(0.55, 0.95, size=n_raters)
    item = np.repeat(np.arange(n_items), per_item)
    rater = np.concatenate([rng.choice(n_raters, size=per_item, replace=False) for _ in range(n_items)])
    correct = rng.random(n_labels) < accuracy[rater]
    label = np.where(correct, truth[item], (truth[item] + rng.integers(1, 3, size=n_labels)) % 3)
    names = np.array(["a", "b", "tie"])
    items, raters, values = item.astype(str).tolist(), rater.astype(str).tolist(), names[label].tolist()
    start = time.perf_counter()
    fit = fit_dawid_skene(item_ids=items, raters=raters, values=values)
    seconds = time.perf_counter() - start
    estimated = np.array([r.accuracy for r in sorted(fit.raters, key=lambda r: int(r.rater))])
    planted = accuracy  # a wrong label is another class at random: each rater is as accurate on every class
    queue.put({"part": "dawid_skene", "labels": n_labels, "raters": n_raters, "items": n_items,
               "seconds_fit": round(seconds, 3), "iterations": fit.iterations, "converged": fit.converged,
               "max_abs_accuracy_error": round(float(np.abs(estimated - planted).max()), 4),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})


def main() -> None:
    results = {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    context = multiprocessing.get_context("spawn")
    for part in (starc_part, dawid_skene_part):
        queue = context.Queue()
        process = context.Process(target=part, args=(queue,))
        process.start()
        result = queue.get(timeout=600)
        process.join()
        results[result.pop("part")] = result
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
