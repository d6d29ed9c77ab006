"""Import speed: 100,000 TRL preference pairs from one JSONL file into PostgreSQL.

Writes the file (prompt, chosen, rejected, plus a metadata column), then imports it through the
same service the upload page and the background task use (`dataset_create` + `dataset_import_run`:
streaming reader, per-row validation, batched bulk inserts), in a fresh process so that its peak
resident memory is the import's own. Prints one JSON line:
{"rows": ..., "file_mb": ..., "seconds": ..., "rows_per_s": ..., "peak_mb": ...}
Target on the 2-core machine: < 30 s and < 500 MB.

usage: python bench/import_speed.py [--rows 100000]
Needs PostgreSQL (bin/test starts it); uses its own database, reward_studio_bench_import.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import fresh_database  # noqa: E402

DB_NAME = "reward_studio_bench_import"


def write_file(path: Path, rows: int) -> None:
    with open(path, "w") as f:
        for i in range(rows):
            f.write(json.dumps({
                "prompt": f"Question {i}: how would you explain topic {i % 977} to a new colleague?",
                "chosen": f"A clear answer to question {i}, with an example and a short summary. " * 3,
                "rejected": f"An unhelpful answer to question {i}.",
                "source": "bench", "difficulty": i % 5,
            }) + "\n")


def run_import(path: str) -> None:
    """In the child process: import the file and print seconds and peak memory."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from webapp.datasets.services import dataset_create, dataset_import_run
    from webapp.projects.services import project_create

    user = get_user_model().objects.create_user("bench", password="bench-password")
    project = project_create(user=user, name="Import bench")
    started = time.perf_counter()
    dataset = dataset_create(project=project, user=user, name="bench", path=Path(path))
    dataset = dataset_import_run(dataset_id=dataset.pk)
    seconds = time.perf_counter() - started
    assert dataset.status == "ready", dataset.error
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": dataset.row_count, "responses": dataset.response_count, "seconds": round(seconds, 2),
                      "peak_mb": round(peak_mb, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_import(args.child)
        return
    env = {"SECRET_KEY": "bench-only-key", **os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
           "DJANGO_SETTINGS_MODULE": "webapp.settings", "LOG_LEVEL": "WARNING"}
    fresh_database(env)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        write_file(path, args.rows)
        out = subprocess.run([sys.executable, __file__, "--child", str(path)], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["file_mb"] = round(path.stat().st_size / 2**20, 1)
    result["rows_per_s"] = round(result["rows"] / result["seconds"])
    print(json.dumps(result))
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", DB_NAME], env=env)


if __name__ == "__main__":
    main()
