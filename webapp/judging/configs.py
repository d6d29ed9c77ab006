"""Judge configs: how to reach one LM judge (an OpenAI-compatible endpoint or a local model folder), and its key.

A stored key is encrypted (webapp.endpoint_keys) and reaches a job only as a file in its folder
(KEY_FILE, 0600) that the child deletes once read, never its command line; :func:`remove_key_file` removes
it whatever happened to the job. The web process itself calls a judge only for a connection test and for
a rubric's live preview, one attempt per question (:func:`judge_config_test`, :func:`preview_judge`).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from django.core.exceptions import ValidationError
from django.db import transaction
from pydantic import ValidationError as PydanticValidationError
from rlcore.judges.openai_compat import EndpointLimits

from webapp.endpoint_keys import api_key_problem, decrypt_api_key, encrypt_api_key, key_env_problem
from webapp.forms_util import pydantic_errors
from webapp.judging.models import JudgeBackend, JudgeConfig
from webapp.training.model_locations import model_location_problem

KEY_FILE = "api-key"
# A connection test shows at most this much of the model's answer (never a non-judge body: rlcore drops those).
REPLY_SHOWN_CHARS = 200


def _clean_config(*, backend: str, endpoint: str, model: str, max_concurrency: int | None, timeout_s: float | None,
                  max_retries: int | None, api_key_env: str) -> dict:
    errors: dict[str, str] = {}
    if backend not in JudgeBackend.values:
        errors["backend"] = f"Unknown backend '{backend}': choose one of {', '.join(JudgeBackend.values)}."
    endpoint = (endpoint or "").strip()
    if backend == JudgeBackend.OPENAI:
        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            errors["endpoint"] = ("Give the endpoint's API root as an http(s) URL, e.g. http://127.0.0.1:8000/v1 "
                                  f"(got '{endpoint}').")
    if not (model or "").strip():
        errors["model"] = "Give the model name at the endpoint (or, for a local model, its folder)."
    # the limits are rlcore's (the judge the worker builds takes them): None keeps the contract's default
    asked = {"max_concurrency": max_concurrency, "timeout_s": timeout_s, "max_retries": max_retries}
    try:
        limits = EndpointLimits.model_validate({k: v for k, v in asked.items() if v is not None})
    except PydanticValidationError as exc:
        errors.update({field: messages[0] for field, messages in pydantic_errors(exc.errors()).message_dict.items()})
        limits = None
    api_key_env = (api_key_env or "").strip()
    if api_key_env and (problem := key_env_problem(api_key_env)):
        errors["api_key_env"] = problem
    if errors:
        raise ValidationError(errors)
    return {"backend": backend, "endpoint": endpoint, "model": model.strip(), **limits.model_dump(),
            "api_key_env": api_key_env}



def _check_local_model(project, backend: str, model: str) -> None:
    # A local judge is a folder the workers load: one this project may use (its registry, MODEL_ROOTS).
    if backend == JudgeBackend.LOCAL_HF and (model or "").strip():
        if problem := model_location_problem(project=project, location=model.strip()):
            raise ValidationError({"model": problem})


@transaction.atomic
def judge_config_create(*, project, user, name: str, model: str, backend: str = JudgeBackend.OPENAI,
                        endpoint: str = "", max_concurrency: int | None = None, timeout_s: float | None = None,
                        max_retries: int | None = None, api_key: str = "", api_key_env: str = "") -> JudgeConfig:
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "Give the judge a name."})
    if api_key and (problem := api_key_problem(api_key.strip())):
        raise ValidationError({"api_key": problem})
    if JudgeConfig.objects.filter(project=project, name=name).exists():
        raise ValidationError({"name": f"A judge named '{name}' already exists in this project."})
    _check_local_model(project, backend, model)
    fields = _clean_config(backend=backend, endpoint=endpoint, model=model, max_concurrency=max_concurrency,
                           timeout_s=timeout_s, max_retries=max_retries, api_key_env=api_key_env)
    return JudgeConfig.objects.create(project=project, name=name, created_by=user,
                                      api_key_encrypted=encrypt_api_key(api_key.strip()) if api_key.strip() else "",
                                      **fields)


@transaction.atomic
def judge_config_update(*, config: JudgeConfig, api_key: str | None = None, clear_api_key: bool = False,
                        **changes) -> JudgeConfig:
    """Change a config; ``api_key`` None or empty keeps the stored key, ``clear_api_key`` drops it."""
    current = {f: getattr(config, f) for f in ("backend", "endpoint", "model", "max_concurrency", "timeout_s",
                                                "max_retries", "api_key_env")}
    unknown = set(changes) - set(current) - {"name"}
    if unknown:
        raise ValidationError({sorted(unknown)[0]: "Not a judge setting."})
    if "name" in changes:
        name = (changes.pop("name") or "").strip()
        if not name:
            raise ValidationError({"name": "Give the judge a name."})
        if JudgeConfig.objects.filter(project=config.project, name=name).exclude(pk=config.pk).exists():
            raise ValidationError({"name": f"A judge named '{name}' already exists in this project."})
        config.name = name
    merged = {**current, **{k: v for k, v in changes.items() if v is not None}}
    _check_local_model(config.project, merged["backend"], merged["model"])
    fields = _clean_config(**merged)
    for field, value in fields.items():
        setattr(config, field, value)
    if clear_api_key:
        config.api_key_encrypted = ""
    elif api_key and api_key.strip():
        if problem := api_key_problem(api_key.strip()):
            raise ValidationError({"api_key": problem})
        config.api_key_encrypted = encrypt_api_key(api_key.strip())
    config.save()
    return config

def stored_key(config: JudgeConfig) -> str | None:
    """The judge's stored key in clear (for a job's key file), None when it has none; a key that no longer
    decrypts is a ValidationError asking for it again."""
    if not config.api_key_encrypted:
        return None
    key = decrypt_api_key(config.api_key_encrypted)
    if key is None:
        raise ValidationError({"api_key": f"The stored API key of judge '{config.name}' cannot be decrypted "
                                          "(SECRET_KEY changed?): enter it again."})
    return key


def backend_arguments(config: JudgeConfig) -> tuple[list[str], str | None]:
    """The rlcore options that reach a judge's backend, and the API key to hand over in KEY_FILE
    (never on the command line); shared by every job that talks to a judge."""
    key = stored_key(config)
    argv = ["--model", config.model, "--max-concurrency", str(config.max_concurrency),
            "--timeout", str(config.timeout_s), "--max-retries", str(config.max_retries)]
    if config.backend == JudgeBackend.LOCAL_HF:
        return argv + ["--local"], None
    argv += ["--endpoint", config.endpoint]
    if key:
        argv += ["--api-key-file", KEY_FILE]
    elif config.api_key_env:
        argv += ["--api-key-env", allowed_key_env(config)]
    return argv, key


def allowed_key_env(config: JudgeConfig) -> str:
    """The environment variable the judge's key is read from, if the operator still allows it."""
    # Checked again on use: the allow-list may have shrunk since the judge was saved.
    if problem := key_env_problem(config.api_key_env):
        raise ValidationError({"api_key_env": f"Judge '{config.name}': {problem}"})
    return config.api_key_env


def write_key_file(folder: Path, key: str | None) -> None:
    """The key for the child, readable by this user only; the child deletes it once read."""
    if key:
        fd = os.open(folder / KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)


def _judge_in_request(config: JudgeConfig, *, max_concurrency: int, timeout_cap_s: float, **settings):
    """An OpenAI-compatible judge the web process may call during a request: one attempt per question,
    each at most ``timeout_cap_s``. (Local models are loaded by workers only, never by the web process.)"""
    from pydantic import SecretStr

    from rlcore.judges.openai_compat import OpenAICompatJudge, OpenAICompatSettings

    key = stored_key(config)
    return OpenAICompatJudge(OpenAICompatSettings(
        base_url=config.endpoint, model=config.model, api_key=SecretStr(key) if key else None,
        api_key_env=None if key or not config.api_key_env else allowed_key_env(config), max_concurrency=max_concurrency,
        timeout_s=min(config.timeout_s, timeout_cap_s), max_retries=0, **settings))


def preview_judge(*, config: JudgeConfig):
    """The judge that grades rule-less criteria in a rubric's live preview (a few responses, now)."""
    if config.backend == JudgeBackend.LOCAL_HF:
        raise ValidationError({"judge_config": f"'{config.name}' is a local model, which only workers load; "
                                               "preview with an OpenAI-compatible judge (a local vLLM server works)."})
    from rlcore.errors import UserError

    try:
        return _judge_in_request(config, max_concurrency=config.max_concurrency, timeout_cap_s=20.0)
    except UserError as exc:
        raise ValidationError({"judge_config": str(exc)}) from None


def judge_config_test(*, config: JudgeConfig) -> dict:
    """Ask the judge one small question now; {"ok": bool, "message": str, "reply": str | None}.

    One attempt, no retries, at most 15 seconds: a connection test, not a labelling run.
    """
    if config.backend == JudgeBackend.LOCAL_HF:
        if problem := model_location_problem(project=config.project, location=config.model):
            return {"ok": False, "reply": None, "message": problem}
        return {"ok": True, "reply": None,
                "message": f"Found a model folder at {config.model} (it is loaded by the worker)."}
    from rlcore.errors import UserError
    from rlcore.judges.base import PairRequest

    try:
        judge = _judge_in_request(config, max_concurrency=1, timeout_cap_s=15.0, max_tokens=64)
        verdict = judge.compare([PairRequest(prompt="What is 2 + 2?", response_a="4", response_b="5")])[0]
    except UserError as exc:
        return {"ok": False, "message": str(exc), "reply": None}
    if verdict.raw_reply is None:
        return {"ok": False, "reply": None,
                "message": f"Could not get a reply from {config.endpoint} (model {config.model}): {verdict.error}"}
    if verdict.verdict is None:
        return {"ok": True, "reply": verdict.raw_reply[:REPLY_SHOWN_CHARS],
                "message": f"The endpoint answered, but the reply has no verdict ({verdict.error}); "
                           "check the model or the prompt template."}
    return {"ok": True, "reply": verdict.raw_reply[:REPLY_SHOWN_CHARS],
            "message": f"The endpoint answered with a verdict ({verdict.verdict})."}


def judge_config_delete(*, config: JudgeConfig) -> str:
    """Remove a judge and its stored key for good; returns its name.

    What it labelled stays: LM labels keep the model in `model_version` and the judge's name in their
    provenance; runs and routing plans that used it show no judge from now on. A job already
    running finishes with the arguments (and key file) it was launched with.
    """
    name = config.name
    config.delete()
    return name



def remove_key_file(sender, job, **kwargs) -> None:
    """A judge's API key file never outlives its job: the child deletes it once read, and this
    removes it whatever happened (cancelled before the child started, crashed before reading)."""
    if job.output_dir:
        (Path(job.output_dir) / KEY_FILE).unlink(missing_ok=True)
