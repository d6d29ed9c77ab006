"""A judge backed by any OpenAI-compatible chat-completions endpoint: vLLM, Ollama, TGI, hosted APIs.

The judge renders requests with the templates of :mod:`rlcore.judges.prompts` (through
:class:`~rlcore.judges.base.PromptedJudge`) and sends each prompt as one user message. Sending is
asynchronous underneath (httpx), behind a synchronous batch API:

- at most ``max_concurrency`` requests in flight (a semaphore, and a connection pool of that size);
- ``timeout_s`` per attempt, start to last byte;
- retries with exponential backoff and jitter on timeouts, connection errors and 5xx replies;
- a 429 pauses *every* request until its ``Retry-After`` has passed (seconds or an HTTP date; capped
  by ``max_retry_after_s``), then the request is retried; without the header, the backoff applies;
- ``logprobs`` with ``top_logprobs`` are requested; the probability of the verdict token becomes the
  result's confidence (:mod:`rlcore.judges.confidence`). A server that rejects the logprobs fields is
  asked again without them, and not asked for them again.

Nothing is ever invented: an unreachable endpoint, exhausted retries, a reply that is not JSON, a
refusal, or a reply that picks no verdict gives a result with ``verdict=None`` and ``error`` saying why.

The API key comes from ``api_key`` or the environment variable named by ``api_key_env``; it is sent
as ``Authorization: Bearer ...`` and appears in no repr, log line or error message.

>>> settings = OpenAICompatSettings(base_url="http://127.0.0.1:8000/v1", model="judge", api_key="sk-secret")
>>> "sk-secret" in repr(settings) or "sk-secret" in repr(OpenAICompatJudge(settings))
False
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from rlcore.errors import UserError
from rlcore.judges.base import GradeRequest, GradeResult, PairRequest, PairVerdict, PromptedJudge, RankingResult, \
    RankRequest, StepGradeRequest
from rlcore.judges.confidence import TokenAlternative, TokenLogprob, grade_confidence, pair_confidence, \
    rank_confidence

if TYPE_CHECKING:
    import httpx

    from rlcore.judges.prompts import JudgeTemplates

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- results that carry label probabilities


class LogprobPairVerdict(PairVerdict):
    """A pairwise verdict whose confidence came from the verdict token's log-probabilities."""

    label_probabilities: dict[str, float] = Field(
        description="probability of 'A', 'B' and 'tie' at the verdict token, renormalised over those labels"
    )


# ---------------------------------------------------------------- one chat completion


class ChatOutcome(BaseModel):
    """What came back for one chat-completion request, after retries."""

    content: str | None = Field(None, description="the assistant message text; None when there is none")
    refusal: str | None = Field(None, description="the server's `message.refusal`, when it refused")
    finish_reason: str | None = Field(None, description="`choices[0].finish_reason` (stop, length, ...)")
    tokens: list[TokenLogprob] | None = Field(None, description="generated tokens with logprobs, if returned")
    error: str | None = Field(None, description="why there is no usable reply; None on success")
    attempts: int = Field(0, description="HTTP attempts made (1 = no retry)")
    status: int | None = Field(None, description="HTTP status of the last attempt; None when none arrived")


class JudgeCallError(RuntimeError):
    """A judge call that produced no usable reply; the message says why (and never holds the API key)."""


class EndpointLimits(BaseModel):
    """How hard to use an OpenAI-compatible endpoint: what a stored judge or endpoint policy keeps beside its URL.

    >>> EndpointLimits().max_concurrency, EndpointLimits(timeout_s=5).timeout_s
    (8, 5.0)
    """

    max_concurrency: int = Field(8, ge=1, le=256, description="requests in flight at once")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="seconds one attempt may take, start to last byte")
    max_retries: int = Field(4, ge=0, le=20,
                             description="retries after the first attempt (timeouts, 5xx, 429, network)")


class OpenAICompatSettings(EndpointLimits):
    """How to reach an OpenAI-compatible endpoint and how hard to try."""

    model_config = ConfigDict(frozen=True)

    base_url: str = Field(description="the API root, ending before /chat/completions (e.g. http://host:8000/v1)")
    model: str = Field(description="the `model` field sent with every request")
    api_key: SecretStr | None = Field(None, description="API key; never shown in reprs, logs or errors")
    api_key_env: str | None = Field(None, description="name of an environment variable holding the API key")
    backoff_base_s: float = Field(0.5, ge=0, description="first backoff; doubles each retry, with jitter")
    backoff_max_s: float = Field(30.0, ge=0, description="longest backoff between two attempts")
    max_retry_after_s: float = Field(120.0, ge=0, description="longest Retry-After honoured from a 429")
    temperature: float = Field(0.0, ge=0, description="sampling temperature (0: greedy, reproducible judging)")
    max_tokens: int = Field(512, ge=1, description="most tokens the judge may write per reply")
    logprobs: bool = Field(True, description="ask for logprobs (confidence from the verdict token)")
    top_logprobs: int = Field(5, ge=0, le=20, description="alternatives per token to ask for")
    system_prompt: str | None = Field(None, description="an optional system message before the judge prompt")

    def resolved_api_key(self) -> str | None:
        """The key to send: ``api_key``, else the variable named by ``api_key_env`` (UserError if unset)."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise UserError(f"api_key_env: environment variable {self.api_key_env} is not set or empty")
            return value
        return None


class ChatCompletionsClient:
    """Sends chat-completion requests with bounded concurrency, retries and rate-limit handling."""

    def __init__(self, settings: OpenAICompatSettings) -> None:
        self.settings = settings
        self._api_key = settings.resolved_api_key()
        self._logprobs_supported = settings.logprobs
        self._pause_until = 0.0  # monotonic time before which no request is sent (a 429's Retry-After)

    def __repr__(self) -> str:
        return f"ChatCompletionsClient(base_url={self.settings.base_url!r}, model={self.settings.model!r})"

    # --- public, synchronous ---

    def chat_batch(self, conversations: Sequence[list[dict[str, str]]]) -> list[ChatOutcome]:
        """Send every conversation; one outcome each, in order. Safe to call from inside an event loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.achat_batch(conversations))
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.achat_batch(conversations)).result()

    async def achat_batch(self, conversations: Sequence[list[dict[str, str]]]) -> list[ChatOutcome]:
        """The asynchronous form of :meth:`chat_batch`."""
        slots = asyncio.Semaphore(self.settings.max_concurrency)
        async with self.http_client() as client:
            return list(await asyncio.gather(*(self._one(client, slots, c) for c in conversations)))

    def http_client(self) -> "httpx.AsyncClient":
        """An async HTTP client for this endpoint: its key, timeout, and a pool of ``max_concurrency``
        connections. Callers that stream many requests (generation) keep one open across all of them."""
        import httpx

        s = self.settings
        limits = httpx.Limits(max_connections=s.max_concurrency, max_keepalive_connections=s.max_concurrency)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        return httpx.AsyncClient(base_url=s.base_url.rstrip("/") + "/", headers=headers, limits=limits,
                                 timeout=httpx.Timeout(s.timeout_s))

    # --- one request ---

    def _body(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {"model": s.model, "messages": messages, "temperature": s.temperature,
                                "max_tokens": s.max_tokens}
        if self._logprobs_supported:
            body["logprobs"] = True
            if s.top_logprobs:
                body["top_logprobs"] = s.top_logprobs
        return body

    async def _one(self, client: "httpx.AsyncClient", slots: asyncio.Semaphore,
                   messages: list[dict[str, str]]) -> ChatOutcome:
        import httpx

        s = self.settings
        attempts, status, reason = 0, None, "no attempt made"
        while attempts <= s.max_retries:
            await self._wait_for_rate_limit()
            attempts += 1
            retry_after: float | None = None
            async with slots:
                try:
                    async with asyncio.timeout(s.timeout_s):
                        response = await client.post("chat/completions", json=self._body(messages))
                except (TimeoutError, httpx.TimeoutException):
                    status, reason = None, f"timed out after {s.timeout_s:g}s"
                except httpx.TransportError as exc:
                    status, reason = None, f"could not reach {s.base_url} ({type(exc).__name__}: {self._clean(exc)})"
                else:
                    status = response.status_code
                    if status == 200:
                        return self._parse(response.text, attempts, status)
                    message = self._clean(_error_message(response.text))
                    if status == 429:
                        retry_after = _retry_after_s(response.headers)
                        reason = f"rate limited (429) {message}".rstrip()
                    elif status >= 500:
                        reason = f"server error {status} {message}".rstrip()
                    elif status == 400 and self._logprobs_supported and "logprob" in message.lower():
                        log.info("endpoint %s rejects logprobs; asking without them", s.base_url)
                        self._logprobs_supported = False
                        attempts -= 1  # not the judge's fault, not a retry
                        continue
                    else:  # 4xx: the request or the credentials are wrong; retrying cannot help
                        return ChatOutcome(error=f"endpoint refused the request: {status} {message}".rstrip(),
                                           attempts=attempts, status=status)
            if attempts > s.max_retries:
                break
            if retry_after is not None:
                self._pause(min(retry_after, s.max_retry_after_s))
                delay = 0.0
            else:
                delay = _backoff_s(attempts, s.backoff_base_s, s.backoff_max_s)
            log.info("judge request attempt %d failed (%s); retrying in %.2fs", attempts, reason, delay)
            await asyncio.sleep(delay)
        return ChatOutcome(error=f"{reason}; gave up after {attempts} attempt(s)", attempts=attempts, status=status)

    def _pause(self, seconds: float) -> None:
        self._pause_until = max(self._pause_until, time.monotonic() + seconds)

    async def _wait_for_rate_limit(self) -> None:
        while (wait := self._pause_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)

    def _parse(self, text: str, attempts: int, status: int) -> ChatOutcome:
        """Read a 200 reply; anything that is not a chat.completion with one choice is an error."""
        try:
            payload = json.loads(text)
            choice = payload["choices"][0]
            message = choice["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            # Never the body itself: the endpoint is the designer's choice, and echoing what an internal
            # service answers would let the app read it for them.
            return ChatOutcome(error=f"malformed reply (not a chat.completion JSON object; {len(text)} characters, "
                                     "not shown)", attempts=attempts, status=status)
        content = message.get("content") if isinstance(message, dict) else None
        refusal = message.get("refusal") if isinstance(message, dict) else None
        outcome = ChatOutcome(content=content if isinstance(content, str) else None,
                              refusal=refusal if isinstance(refusal, str) else None,
                              finish_reason=choice.get("finish_reason"), tokens=_read_logprobs(choice.get("logprobs")),
                              attempts=attempts, status=status)
        if outcome.refusal is not None:
            return outcome.model_copy(update={"error": f"judge refused: {self._clean(outcome.refusal)[:200]}"})
        if outcome.content is None:
            return outcome.model_copy(update={"error": "reply has no message content"})
        return outcome

    def _clean(self, value: object) -> str:
        """Text for a message or log line, with the API key blotted out should a server echo it."""
        text = str(value)
        return text.replace(self._api_key, "***") if self._api_key else text


def _error_message(text: str) -> str:
    """The message of an OpenAI-style error body (``{"error": {"message": ...}}``), at most 200 characters;
    any other body is not repeated (see ``_parse``).

    >>> _error_message('{"error": {"message": "model not found"}}'), _error_message("<html>admin</html>")
    ('model not found', '(a non-JSON body of 18 characters, not shown)')
    """
    try:
        error = json.loads(text).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        return str(message)[:200] if isinstance(message, str) and message else ""
    except (ValueError, AttributeError):
        return f"(a non-JSON body of {len(text)} characters, not shown)"


def _read_logprobs(logprobs: Any) -> list[TokenLogprob] | None:
    """OpenAI's ``choices[0].logprobs.content`` as TokenLogprobs; None when absent or not understood."""
    try:
        content = logprobs["content"]
        return [TokenLogprob(token=entry["token"], logprob=float(entry["logprob"]),
                             top=[TokenAlternative(token=alt["token"], logprob=float(alt["logprob"]))
                                  for alt in entry.get("top_logprobs") or []])
                for entry in content]
    except (TypeError, KeyError, ValueError):
        return None


def _retry_after_s(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date).

    >>> _retry_after_s({"Retry-After": "2"}), _retry_after_s({"retry-after-ms": "250"}), _retry_after_s({})
    (2.0, 0.25, None)
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _backoff_s(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, so retries spread out.

    >>> all(0.5 <= _backoff_s(1, 1.0, 30) <= 1.0 and 2.0 <= _backoff_s(3, 1.0, 30) <= 4.0 for _ in range(50))
    True
    """
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


# ---------------------------------------------------------------- the judge


class LogprobJudgeMixin:
    """Turns replies with token log-probabilities into results whose confidence comes from the verdict token.

    A subclass's ``complete`` records each reply's tokens with :meth:`_record`; ``grade`` / ``compare`` /
    ``rank`` then replace the confidence (self-reported, from a ``Confidence:`` line) by the probability of
    the verdict token where the backend returned log-probabilities, and turn refusals and truncated
    replies into clear errors. Results stay in request order, one per request.
    """

    @property
    def _local(self) -> threading.local:
        return self.__dict__.setdefault("_captures", threading.local())  # per judge, per thread

    def _record(self, outcomes: Sequence[ChatOutcome]) -> None:
        captured = getattr(self._local, "captured", None)
        if captured is not None:
            captured.extend(outcomes)

    def _capture(self) -> list[ChatOutcome]:
        self._local.captured = []
        return self._local.captured

    def _release(self) -> None:
        self._local.captured = None

    def _with_outcomes(self, call, requests):
        captured = self._capture()
        try:
            results = call(requests)
        finally:
            self._release()
        if len(captured) != len(results):  # not our complete(): leave results as they are
            return results, [None] * len(results)
        return results, captured

    def _with_confidence(self, call, requests, confidence_of) -> list:
        """``call``'s results, each explained (:func:`_explain`) and, where its reply came with tokens, given
        the confidence ``confidence_of(request, result, tokens)`` returns (None keeps the result as it is)."""
        results, outcomes = self._with_outcomes(call, requests)
        out = []
        for request, result, outcome in zip(requests, results, outcomes):
            result = _explain(result, outcome)
            if result.verdict is not None and outcome is not None and outcome.tokens:
                rescored = confidence_of(request, result, outcome.tokens)
                result = result if rescored is None else rescored
            out.append(result)
        return out

    def compare(self, requests: Sequence[PairRequest]) -> list[PairVerdict]:
        def with_label_probabilities(request, result, tokens):
            probabilities = pair_confidence(tokens, result.verdict)
            if probabilities is None:
                return None
            return LogprobPairVerdict(**{**result.model_dump(), "confidence": probabilities[result.verdict],
                                         "label_probabilities": probabilities})

        return self._with_confidence(super().compare, requests, with_label_probabilities)  # type: ignore[misc]

    def grade(self, requests: Sequence[GradeRequest]) -> list[GradeResult]:
        return self._with_confidence(super().grade, requests, _graded)  # type: ignore[misc]

    def grade_steps(self, requests: Sequence[StepGradeRequest]) -> list[GradeResult]:
        return self._with_confidence(super().grade_steps, requests, _graded)  # type: ignore[misc]

    def rank(self, requests: Sequence[RankRequest]) -> list[RankingResult]:
        def ranked(request, result, tokens):
            confidence = rank_confidence(tokens, len(request.responses))
            return None if confidence is None else result.model_copy(update={"confidence": confidence})

        return self._with_confidence(super().rank, requests, ranked)  # type: ignore[misc]


def _graded(request: GradeRequest | StepGradeRequest, result: GradeResult, tokens) -> GradeResult | None:
    confidence = grade_confidence(tokens, request.scale_min, request.scale_max)
    return None if confidence is None else result.model_copy(update={"confidence": confidence})


_REFUSAL = re.compile(r"(?i)^\W*(I'?m sorry|sorry,|I (?:cannot|can'?t|won'?t|am unable|'m unable)|"
                      r"as an AI\b|I must decline)")


def _explain(result, outcome: ChatOutcome | None):
    """A refusal or a reply cut at max_tokens is no verdict, and the error says so."""
    if result.verdict is None and result.raw_reply and _REFUSAL.search(result.raw_reply) and result.error \
            and not result.error.startswith("judge call failed"):
        result = result.model_copy(update={"error": f"judge refused (the reply reads as a refusal): {result.error}"})
    if outcome is None:
        return result
    if outcome.refusal is not None:
        return result.model_copy(update={"verdict": None, "confidence": None, "raw_reply": outcome.refusal,
                                         "error": outcome.error, **({"strength": None}
                                                                    if "strength" in type(result).model_fields
                                                                    else {})})
    if result.verdict is None and outcome.error is None and outcome.finish_reason == "length":
        return result.model_copy(update={"error": f"{result.error}; the reply was cut off at the token limit"})
    return result


class OpenAICompatJudge(LogprobJudgeMixin, PromptedJudge):
    """A :class:`~rlcore.judges.base.Judge` that asks an OpenAI-compatible chat-completions endpoint.

    Each rendered prompt is sent as one user message (after ``system_prompt`` when set).
    """

    def __init__(self, settings: OpenAICompatSettings, templates: "JudgeTemplates | None" = None,
                 name: str | None = None) -> None:
        super().__init__(templates, name or f"openai-compat:{settings.model}")
        self.settings = settings
        self.client = ChatCompletionsClient(settings)

    def __repr__(self) -> str:
        return f"OpenAICompatJudge(base_url={self.settings.base_url!r}, model={self.settings.model!r})"

    def complete(self, prompts: Sequence[str]) -> list[str | BaseException]:
        system = [{"role": "system", "content": self.settings.system_prompt}] if self.settings.system_prompt else []
        outcomes = self.client.chat_batch([[*system, {"role": "user", "content": p}] for p in prompts])
        self._record(outcomes)
        return [JudgeCallError(o.error) if o.error and o.refusal is None else (o.refusal or o.content or "")
                for o in outcomes]


__all__ = [
    "ChatCompletionsClient",
    "ChatOutcome",
    "JudgeCallError",
    "LogprobJudgeMixin",
    "LogprobPairVerdict",
    "OpenAICompatJudge",
    "OpenAICompatSettings",
]
