"""The rlcore command line for each kind of job, built from validated input only."""


def selfcheck_argv(*, steps: int, interval: float, fail_at: int | None) -> list[str]:
    argv = ["selfcheck", "--steps", str(steps), "--interval", str(interval)]
    if fail_at is not None:
        argv += ["--fail-at", str(fail_at)]
    return argv
