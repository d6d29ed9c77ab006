"""``python -m rlcore generate --spec GEN.yaml``: sample responses from policies into a resumable JSONL."""

from __future__ import annotations


def run_generate(args) -> int:
    from rlcore.generation.run import generate, note
    from rlcore.generation.spec import load_generation_spec

    counts = generate(load_generation_spec(args.spec))
    note(f"generated {counts['written']} responses, {counts['skipped']} already there, {counts['total']} in all")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="sample responses to a prompt set from local models, hub ids or endpoints (resumable)",
        description="Fields of the spec (YAML/JSON): prompts, output, policies [{kind: folder|hub|endpoint, "
                    "location, base_url, api_key_env, max_concurrency, ...}], samples_per_prompt, temperature, "
                    "top_p, max_new_tokens, seed, batch_size, prompt_overflow (refuse|truncate_left), backend "
                    "(transformers|vllm). A re-run appends only what is missing.")
    parser.add_argument("--spec", required=True, help="GenerationSpec file (.yaml / .json)")
    parser.set_defaults(handler=run_generate)
