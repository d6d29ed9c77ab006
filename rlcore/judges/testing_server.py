"""A real OpenAI-compatible chat-completions server on loopback, for tests, benches and demos.

It speaks the same HTTP protocol as vLLM, Ollama, TGI or a hosted API (``POST /v1/chat/completions``,
``GET /v1/models``), so the judge backend is exercised through real sockets, real JSON and real
status codes. What it answers comes from a *policy*: a function from the request body to a
:class:`ScriptedReply`. A scripted policy can answer with any text and log-probabilities, or with a
429 + ``Retry-After``, a 500, a body that is not JSON, a refusal, or a reply slow enough to time out.
:class:`HFChatPolicy` answers with a (tiny) local Hugging Face model instead.

The server also measures what a client did to it (``stats``): how many requests, how many were in
flight at most, which status codes it sent. ``latency_s`` and ``capacity`` make it a server with a
known throughput (``capacity / latency_s`` requests per second; requests above capacity queue),
which is what ``bench/judge_throughput.py`` measures the client against.

>>> with ChatCompletionsServer(always("B", logprobs=[[("B", -0.1), ("A", -2.4)]])) as server:
...     import httpx
...     body = {"model": "m", "messages": [{"role": "user", "content": "A or B?"}],
...             "logprobs": True, "top_logprobs": 2}
...     reply = httpx.post(server.base_url + "/chat/completions", json=body).json()
>>> reply["choices"][0]["message"]["content"]
'B'
>>> [alt["token"] for alt in reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]]
['B', 'A']
>>> server.stats.requests, server.stats.max_in_flight
(1, 1)
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

# (token, logprob) alternatives at one generated position, most likely first; the first is the token chosen.
TokenAlternatives = list[tuple[str, float]]


class ScriptedReply(BaseModel):
    """What the server sends back for one request."""

    model_config = ConfigDict(frozen=True)

    content: str | None = Field("A", description="assistant message text; None sends `content: null`")
    refusal: str | None = Field(None, description="OpenAI-style `message.refusal` text (content is then null)")
    logprobs: list[TokenAlternatives] | None = Field(
        None,
        description="per generated token, its (token, logprob) alternatives, chosen token first; sent only when "
        "the request asks for `logprobs`, truncated to its `top_logprobs`",
    )
    status: int = Field(200, description="HTTP status code; non-2xx replies carry an OpenAI error object")
    error_message: str = Field("scripted error", description="`error.message` of a non-2xx reply")
    headers: dict[str, str] = Field(default_factory=dict, description="extra response headers, e.g. Retry-After")
    raw_body: str | None = Field(None, description="sent verbatim instead of a JSON reply (malformed replies)")
    delay_s: float = Field(0.0, ge=0, description="extra seconds to wait before answering (timeouts)")
    finish_reason: str = Field("stop", description="`choices[0].finish_reason`")


# A policy turns a parsed request body into the reply to send.
Policy = Callable[[dict[str, Any]], ScriptedReply]


def always(content: str | None = "A", logprobs: list[TokenAlternatives] | None = None, **fields: Any) -> Policy:
    """A policy that answers every request the same way.

    >>> always("tie")({"messages": []}).content
    'tie'
    """
    reply = ScriptedReply(content=content, logprobs=logprobs, **fields)
    return lambda body: reply


def scripted(replies: Sequence[ScriptedReply], then: ScriptedReply | None = None) -> Policy:
    """A policy that answers with ``replies`` in order, then with ``then`` (default: the last reply) forever.

    Thread-safe: concurrent requests each take the next reply.

    >>> policy = scripted([ScriptedReply(status=429), ScriptedReply(content="B")])
    >>> [policy({}).status, policy({}).content, policy({}).content]
    [429, 'B', 'B']
    """
    if not replies:
        raise ValueError("scripted() needs at least one reply")
    queue = iter(list(replies))
    last = then or replies[-1]
    lock = threading.Lock()

    def policy(body: dict[str, Any]) -> ScriptedReply:
        with lock:
            return next(queue, last)

    return policy


def hashed_choice(labels: Sequence[str] = ("A", "B"), confidence: float = 0.8) -> Policy:
    """A policy that picks one of ``labels`` by a hash of the messages: deterministic per prompt, and
    indifferent to what the prompt says (so swapping the order of A and B changes its answer at random,
    like a judge with no preference). Reports ``confidence`` for its pick through log-probabilities.

    >>> policy = hashed_choice()
    >>> body = {"messages": [{"role": "user", "content": "x"}]}
    >>> policy(body).content == policy(body).content
    True
    """
    import math

    others = max(1, len(labels) - 1)

    def policy(body: dict[str, Any]) -> ScriptedReply:
        digest = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).digest()
        pick = labels[digest[0] % len(labels)]
        rest = [(label, math.log((1 - confidence) / others)) for label in labels if label != pick]
        return ScriptedReply(content=pick, logprobs=[[(pick, math.log(confidence)), *rest]])

    return policy


def prefers_keyword(keyword: str, confidence: float = 0.9) -> Policy:
    """A judge that reads the default compare prompt (``[Response A]`` ... ``[Response B]`` ...) and prefers
    the response that contains ``keyword``; a tie when both or neither do. Order-independent, so judging
    both orders agrees; its log-probabilities give ``confidence`` to the pick.

    >>> prompt = "[Response A]\\nno\\n\\n[Response B]\\nyes, thanks\\n\\nThink briefly"
    >>> prefers_keyword("thanks")({"messages": [{"role": "user", "content": prompt}]}).content
    'Verdict: B\\nStrength: 2'
    """
    import math

    def policy(body: dict[str, Any]) -> ScriptedReply:
        text = str((body.get("messages") or [{}])[-1].get("content", ""))
        a_start, b_start = text.find("[Response A]"), text.find("[Response B]")
        if a_start < 0 or b_start < 0:
            return ScriptedReply(content="I can only compare two responses.")
        first, second = sorted([("A", a_start), ("B", b_start)], key=lambda x: x[1])
        sections = {first[0]: text[first[1]:second[1]], second[0]: text[second[1]:]}
        has = [label for label in ("A", "B") if keyword in sections[label]]
        pick = has[0] if len(has) == 1 else "tie"
        rest = [(label, math.log((1 - confidence) / 2)) for label in (" A", " B", " tie") if label.strip() != pick]
        tokens = [[("Verdict", -0.01)], [(":", -0.01)], [(f" {pick}", math.log(confidence)), *rest]]
        if pick == "tie":
            return ScriptedReply(content="Verdict: tie", logprobs=tokens)
        return ScriptedReply(content=f"Verdict: {pick}\nStrength: 2",
                             logprobs=[*tokens, [("\n", -0.01)], [("Strength", -0.01)], [(":", -0.01)], [(" 2", -0.1)]])

    return policy


def grades_steps_by_keyword(keyword: str, bad: str = "-1", good: str = "1") -> Policy:
    """A step judge that reads the default steps prompt (``Step k of n:`` then the step, then a blank line)
    and answers ``Score: <bad>`` when that step contains ``keyword``, else ``Score: <good>``.

    >>> prompt = "Steps so far:\\n1. fine\\n\\nStep 2 of 2:\\nsorry, 2+2=5\\n\\nThink briefly"
    >>> grades_steps_by_keyword("sorry")({"messages": [{"role": "user", "content": prompt}]}).content
    'Score: -1'
    """
    import re

    header = re.compile(r"(?m)^Step \d+ of \d+:\n")

    def policy(body: dict[str, Any]) -> ScriptedReply:
        text = str((body.get("messages") or [{}])[-1].get("content", ""))
        match = header.search(text)
        if match is None:
            return ScriptedReply(content="I can only grade one step.")
        step = text[match.end():].split("\n\n", 1)[0]
        return ScriptedReply(content=f"Score: {bad if keyword in step else good}")

    return policy


def position_biased(shown: str = "first", strength: int = 2) -> Policy:
    """A judge that ignores the content and always picks the response shown ``first`` (A) or ``second``
    (B): judging both orders then always disagrees (every pair becomes a position-bias tie), which is
    what a badly prompted or too small judge does. ``serve-test --position-bias first`` serves it.

    >>> position_biased("second")({"messages": [{"role": "user", "content": "anything"}]}).content
    'Verdict: B\\nStrength: 2'
    """
    if shown not in ("first", "second"):
        raise ValueError(f"shown must be 'first' or 'second', got {shown!r}")
    pick = "A" if shown == "first" else "B"
    other = "B" if pick == "A" else "A"
    reply = ScriptedReply(content=f"Verdict: {pick}\nStrength: {strength}",
                          logprobs=[[("Verdict", -0.01)], [(":", -0.01)], [(f" {pick}", -0.05), (f" {other}", -3.0)],
                                    [("\n", -0.01)], [("Strength", -0.01)], [(":", -0.01)], [(f" {strength}", -0.1)]])
    return lambda body: reply


def ranks_by_keyword(keyword: str) -> Policy:
    """A judge that reads the default rank prompt (``[Response 1]`` ... ``[Response n]`` ...) and ranks the
    responses by how often they contain ``keyword``, most first, ties by the text itself; order-independent,
    so ranking the reversed list agrees. Answers ``Ranking: i > j > ...``.

    >>> prompt = ("[Response 1]\\nno\\n\\n[Response 2]\\nyes, thanks\\n\\n[Response 3]\\nthanks, thanks"
    ...           "\\n\\nThink briefly")
    >>> ranks_by_keyword("thanks")({"messages": [{"role": "user", "content": prompt}]}).content
    'Ranking: 3 > 2 > 1'
    """
    import re

    def policy(body: dict[str, Any]) -> ScriptedReply:
        text = str((body.get("messages") or [{}])[-1].get("content", ""))
        parts = re.split(r"\[Response (\d+)\]\n", text)
        if len(parts) < 5:
            return ScriptedReply(content="I can only rank numbered responses.")
        sections = {int(number): body_text.split("\n\nThink briefly")[0]
                    for number, body_text in zip(parts[1::2], parts[2::2])}
        order = sorted(sections, key=lambda n: (-sections[n].count(keyword), sections[n]))
        return ScriptedReply(content="Ranking: " + " > ".join(str(n) for n in order))

    return policy


class ServerStats(BaseModel):
    """What clients did to the server since it started (or since ``reset``)."""

    requests: int = Field(0, description="chat-completion requests received")
    in_flight: int = Field(0, description="requests received and not yet answered, now")
    max_in_flight: int = Field(0, description="the most requests in flight at once")
    statuses: dict[int, int] = Field(default_factory=dict, description="count of replies per HTTP status sent")
    bodies: list[dict[str, Any]] = Field(default_factory=list, description="parsed request bodies, in arrival order")
    authorization_failures: int = Field(0, description="requests refused for a missing or wrong API key")


class ChatCompletionsServer:
    """An OpenAI-compatible chat-completions server on ``127.0.0.1``, serving in background threads.

    Use it as a context manager (or ``start()`` / ``stop()``); ``base_url`` is what a client's
    ``base_url`` setting takes (it ends in ``/v1``).

    - ``latency_s``: seconds every request takes (on top of a reply's own ``delay_s``).
    - ``capacity``: requests served at once; more queue inside the server. None: no limit.
    - ``api_key``: when set, requests without ``Authorization: Bearer <api_key>`` get a 401.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        capacity: int | None = None,
        model_name: str = "test-judge",
        api_key: str | None = None,
        keep_bodies: bool = True,
    ) -> None:
        self.policy = policy
        self.latency_s = latency_s
        self.model_name = model_name
        self.keep_bodies = keep_bodies
        self._api_key = api_key
        self._slots = threading.BoundedSemaphore(capacity) if capacity else None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stats = ServerStats()
        self._thread: threading.Thread | None = None
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.app = self

    def __repr__(self) -> str:
        return f"ChatCompletionsServer(base_url={self.base_url!r}, model_name={self.model_name!r})"

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self._httpd.server_address[0]}:{self.port}/v1"

    @property
    def stats(self) -> ServerStats:
        """A snapshot of the counters."""
        with self._lock:
            return self._stats.model_copy(deep=True)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = ServerStats(in_flight=self._stats.in_flight)

    def start(self) -> "ChatCompletionsServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="chat-completions-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (the ``serve-test`` command)."""
        try:
            self._httpd.serve_forever()
        finally:
            self._stopping.set()
            self._httpd.server_close()

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping on latency or delay
        if self._thread:  # shutdown() waits for serve_forever, which never ran if start() wasn't called
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    def __enter__(self) -> "ChatCompletionsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- called from handler threads ---

    def _authorized(self, header: str | None) -> bool:
        if self._api_key is None:
            return True
        import hmac

        ok = hmac.compare_digest((header or "").encode(), f"Bearer {self._api_key}".encode())
        if not ok:
            with self._lock:
                self._stats.authorization_failures += 1
        return ok

    def _enter(self, body: dict[str, Any] | None) -> None:
        with self._lock:
            stats = self._stats
            stats.requests += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            if body is not None and self.keep_bodies:
                stats.bodies.append(body)

    def _answering(self, status: int) -> None:
        # counted before the reply is written: a client that has its answer sees it counted
        with self._lock:
            self._stats.statuses[status] = self._stats.statuses.get(status, 0) + 1

    def _leave(self) -> None:
        with self._lock:
            self._stats.in_flight -= 1

    def _serve(self, body: dict[str, Any]) -> ScriptedReply:
        """Wait for a capacity slot, take the latency, ask the policy."""
        if self._slots is not None:
            self._slots.acquire()
        try:
            reply = self.policy(body)
            wait = self.latency_s + reply.delay_s
            if wait > 0:
                self._stopping.wait(wait)
            return reply
        finally:
            if self._slots is not None:
                self._slots.release()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive connections must not hold up stop()
    request_queue_size = 256  # a burst of connections from a concurrent client must not overflow the backlog
    app: ChatCompletionsServer


_ids = itertools.count(1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    disable_nagle_algorithm = True  # headers and body go out as two writes; Nagle would hold the body back
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: tests and benches own stderr
        pass

    def do_GET(self) -> None:  # noqa: N802
        app = self.server.app
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send_json(200, {"object": "list", "data": [{"id": app.model_name, "object": "model",
                                                              "owned_by": "rlcore-testing"}]})
        elif self.path.rstrip("/") == "/health":
            self._send_json(200, {"status": "ok"})
        else:
            self._send_json(404, _error_body(f"no route {self.path}", "not_found_error"))

    def do_POST(self) -> None:  # noqa: N802
        app = self.server.app
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, _error_body(f"no route {self.path}", "not_found_error"))
            return
        if not app._authorized(self.headers.get("Authorization")):
            self._send_json(401, _error_body("Incorrect API key provided.", "invalid_request_error",
                                             "invalid_api_key"))
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        app._enter(body if isinstance(body, dict) else None)
        try:
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                self._send_json(400, _error_body("body must be a JSON object with a `messages` list",
                                                 "invalid_request_error"), count=True)
                return
            reply = app._serve(body)
            status = reply.status
            if app._stopping.is_set():
                status = 503
                self._send_json(503, _error_body("server is shutting down", "server_error"), count=True)
            elif reply.raw_body is not None:
                self._send(status, reply.raw_body.encode(), "application/json", reply.headers, count=True)
            elif status >= 400:
                self._send_json(status, _error_body(reply.error_message, "server_error" if status >= 500
                                                    else "rate_limit_error" if status == 429
                                                    else "invalid_request_error"), reply.headers, count=True)
            else:
                self._send_json(status, _completion_body(body, reply, app.model_name), reply.headers, count=True)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout); nothing to answer
        finally:
            app._leave()

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None, *,
                   count: bool = False) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers or {}, count=count)

    def _send(self, status: int, data: bytes, content_type: str, headers: dict[str, str], *,
              count: bool = False) -> None:
        """``count``: a chat-completions reply, counted in ``stats.statuses``."""
        if count:
            self.server.app._answering(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def _error_body(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _completion_body(request: dict[str, Any], reply: ScriptedReply, model_name: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object for ``reply``, honouring the request's logprobs options."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content, "refusal": reply.refusal}
    if reply.refusal is not None:
        message["content"] = None
    logprobs = None
    if request.get("logprobs") and reply.logprobs is not None:
        top_n = int(request.get("top_logprobs") or 0)
        logprobs = {"content": [_token_entry(alts, top_n) for alts in reply.logprobs], "refusal": None}
    completion_tokens = len(reply.logprobs) if reply.logprobs else len((reply.content or "").split())
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request["messages"] if isinstance(m, dict))
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model") or model_name,
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": reply.finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _token_entry(alternatives: TokenAlternatives, top_n: int) -> dict[str, Any]:
    token, logprob = alternatives[0]
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode()),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in alternatives[:top_n]],
    }


class HFChatPolicy:
    """Answers with a causal LM from a local directory or hub id: greedy decoding of the chat-formatted
    messages, with the log-probabilities of each generated token and its top alternatives.

    Requests are served one at a time (a lock around the model); ``max_tokens`` in the request bounds
    the generated length (default 16).
    """

    def __init__(self, model: str, *, device: str | None = None, default_max_tokens: int = 16) -> None:
        from rlcore.judges.local_hf import load_causal_lm

        self.model, self.tokenizer = load_causal_lm(model, device=device)
        self.default_max_tokens = default_max_tokens
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> ScriptedReply:
        from rlcore.judges.local_hf import generate_with_logprobs

        max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or self.default_max_tokens)
        top_n = max(1, int(body.get("top_logprobs") or 1))
        with self._lock:
            (generation,) = generate_with_logprobs(
                self.model, self.tokenizer, [body["messages"]], max_new_tokens=max_tokens, top_logprobs=top_n
            )
        return ScriptedReply(
            content=generation.text,
            logprobs=[[(alt.token, alt.logprob) for alt in step.top] for step in generation.tokens],
            finish_reason=generation.finish_reason,
        )


def serve_test(port: int, model: str | None, reply: str, latency_s: float, capacity: int | None,
               host: str = "127.0.0.1", position_bias: str | None = None) -> int:
    """Run the server in the foreground (``python -m rlcore judge serve-test``). A fixed ``reply`` that
    names a verdict is itself position-biased in a both-orders run (the same letter for both orders)."""
    import re

    pieces = [[(piece, -0.05)] for piece in re.findall(r"\s*\S+", reply)]  # whitespace-led "tokens"
    if model:
        policy: Policy = HFChatPolicy(model)
    elif position_bias:
        policy = position_biased(position_bias)
    else:
        policy = always(reply, logprobs=pieces or None)
    server = ChatCompletionsServer(policy, host=host, port=port, latency_s=latency_s, capacity=capacity,
                                   model_name=model or "test-judge")
    print(f"serving OpenAI-compatible chat completions at {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


__all__ = [
    "ChatCompletionsServer",
    "HFChatPolicy",
    "Policy",
    "ScriptedReply",
    "ServerStats",
    "always",
    "hashed_choice",
    "position_biased",
    "prefers_keyword",
    "ranks_by_keyword",
    "scripted",
    "serve_test",
]
