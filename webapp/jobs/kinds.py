"""The kinds of job, and the rlcore command line for each, built from validated input only.

The kinds are named here, in the jobs app, because pages that show any job (its dashboard, resume and clone
buttons) tell them apart; the apps that launch them import them from here."""

REWARD_MODEL_KIND = "train_reward_model"
GRPO_KIND = "train_grpo"
PRM_KIND = "train_prm"
# The training runs: they checkpoint, so a stopped one can be resumed (training.services.job_resume).
TRAINING_KINDS = {REWARD_MODEL_KIND: "reward-model", GRPO_KIND: "grpo", PRM_KIND: "prm"}


def selfcheck_argv(*, steps: int, interval: float, fail_at: int | None) -> list[str]:
    argv = ["selfcheck", "--steps", str(steps), "--interval", str(interval)]
    if fail_at is not None:
        argv += ["--fail-at", str(fail_at)]
    return argv


SERVE_REWARD_KIND = "serve_reward"


def serve_reward_argv(*, spec_path: str, token_file: str, withdrawn_file: str, host: str) -> list[str]:
    """A reward server on a free port (the child reports it as a ``reward_server`` artifact)."""
    return ["reward", "serve", "--spec", spec_path, "--host", host, "--port", "0", "--token-file", token_file,
            "--withdrawn-file", withdrawn_file]


GENERATE_KIND = "generate"


def generate_argv(*, spec_path: str) -> list[str]:
    """Sample responses from policies (rlcore.generation): resumable, so a resumed job appends what is missing."""
    return ["generate", "--spec", spec_path]


OVEROPT_SCORE_KIND = "overopt_score"


def overopt_score_argv(*, spec_path: str) -> list[str]:
    """Score a GRPO run's checkpoints on held-out prompts (rlcore.analysis.checkpoint_scoring); resumable per checkpoint."""
    return ["analysis", "overopt-score", "--spec", spec_path]
