"""``python -m rlcore reward serve``: a RewardSpec scored over HTTP, for any RL framework to call.

Endpoints (the request and response bodies are the pydantic models below; ``GET /openapi.json`` is built
from them, so the document and the server cannot disagree):

- ``POST /score`` — ``{"rows": [{"prompt", "completion", <columns>...}]}`` → the total of every row and
  every component, exactly as :func:`rlcore.rewards.engine.score_rows` gives them in-process;
- ``POST /get_reward`` — OpenRLHF's remote reward-model protocol: ``{"query": [...], "prompts": [...],
  "labels": [...]}`` → ``{"rewards": [...]}`` (see :class:`OpenRLHFRequest` for how a query is split);
- ``GET /health`` — ``{"status": "ok", ...}``, no token needed.

One request is one batch: rows with the same prompt in a request form a group for the group normalisations
(``group_zscore``, ``normalize_then_sum``), as a GRPO step's generations do — send a prompt's whole group
in one request. Batches are bounded (``max_rows``, ``max_body_bytes``) and so is the number scored at once
(``max_concurrency``); a request beyond either is refused with 413 / 503, and the server keeps serving.

Every error a caller can cause answers 4xx ``{"detail": [{"field": ..., "message": ...}]}`` naming the field.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
import time
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlcore.errors import UserError, field_path
from rlcore.rewards.spec import RewardModelComponent, RewardSpec

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DEFAULT_MAX_ROWS = 1024
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# A request waits this long for a free scoring slot before it is told to retry (503).
DEFAULT_QUEUE_SECONDS = 30.0


# ---------------------------------------------------------------- contracts (the OpenAPI schemas)


class ScoreRow(BaseModel):
    """A completion to score, with its prompt and any dataset columns the spec reads (``answer``, ...)."""

    model_config = ConfigDict(extra="allow")

    prompt: str | list[dict[str, Any]] = Field("", description="the prompt: a string or a list of chat messages")
    completion: str | list[dict[str, Any]] = Field(
        description="the completion: a string or a list of chat messages (the assistant's are scored)")


class ScoreRequest(BaseModel):
    """A batch; rows sharing a prompt are one group for the group normalisations."""

    model_config = ConfigDict(extra="forbid")

    rows: list[ScoreRow] = Field(min_length=1, description="the completions to score (at most the server's max_rows)")


class ScoreResponse(BaseModel):
    """Each row's reward and every component, in the order of the request's rows."""

    rewards: list[float | None] = Field(description="the total after normalisation (what a trainer optimises); "
                                                    "None where no component applies")
    raw_rewards: list[float | None] = Field(description="the weighted sum of components before normalisation")
    components: dict[str, list[float | None]] = Field(description="each component's value per row; None where it "
                                                                 "does not apply (its 'when' does not hold)")
    unscored: list[int] = Field(description="indices of rows no component scores (their reward is None)")


class OpenRLHFRequest(BaseModel):
    """OpenRLHF's remote reward-model request (``openrlhf.utils.remote_rm_utils.remote_rm_fn``).

    ``query`` holds prompt + response as one string each. With ``prompts`` (which OpenRLHF sends), the
    completion is what follows the prompt in its query (text before the prompt — left padding — is dropped);
    without them the whole query is scored as the completion of an empty prompt, so all rows are one group.
    ``labels`` go to the column the server was started with (``--label-column``, e.g. a verifier's
    ``answer``). Other keys some OpenRLHF versions send (``metadata``, ...) are ignored.
    """

    model_config = ConfigDict(extra="ignore")

    query: list[str] = Field(min_length=1, description="prompt + response, one string per sample")
    prompts: list[str] | None = Field(None, description="the prompt of each query, to split it from the response")
    labels: list[Any] | None = Field(None, description="a label per query (e.g. the reference answer)")


class OpenRLHFResponse(BaseModel):
    """OpenRLHF reads ``rewards`` as a tensor, so a row nothing scores gets 0.0 there and is listed in
    ``unscored``; ``components`` carries every component, as ``/score`` does."""

    rewards: list[float] = Field(description="the total per query (0.0 for unscored rows)")
    unscored: list[int] = Field(description="indices of queries no component scores (sent as 0.0 in rewards)")
    components: dict[str, list[float | None]] = Field(description="each component's value per query")


class HealthResponse(BaseModel):
    status: str = Field(description="'ok'")
    spec: str = Field(description="the served spec's name")
    components: list[str] = Field(description="the spec's component names")
    max_rows: int = Field(description="most rows one request may hold")
    requests: int = Field(description="requests scored since the server started")
    completions: int = Field(description="completions scored since the server started")
    refused: int = Field(description="requests refused (4xx/5xx) since the server started")


class ErrorItem(BaseModel):
    field: str = Field(description="the field at fault, e.g. 'rows[3].completion' or 'Authorization'")
    message: str = Field(description="what is wrong and how to fix it")


class ErrorResponse(BaseModel):
    detail: list[ErrorItem]


class RequestError(Exception):
    """A refused request: an HTTP status and the fields at fault."""

    def __init__(self, status: int, field: str, message: str, *more: tuple[str, str]) -> None:
        super().__init__(message)
        self.status = status
        self.items = [(field, message), *more]

    def body(self) -> dict[str, Any]:
        return {"detail": [{"field": f, "message": m} for f, m in self.items]}


def _invalid(exc: ValidationError) -> RequestError:
    items = [(field_path(e["loc"]) or "body", e["msg"]) for e in exc.errors()[:20]]
    return RequestError(422, *items[0], *items[1:])


# ---------------------------------------------------------------- the scoring service


class RewardService:
    """A compiled spec behind the checks a served request needs; the HTTP layer only moves bytes."""

    def __init__(self, spec: RewardSpec, *, judge=None, max_rows: int = DEFAULT_MAX_ROWS,
                 max_concurrency: int | None = None, queue_seconds: float = DEFAULT_QUEUE_SECONDS,
                 label_column: str | None = None, withdrawn_file: str | Path | None = None,
                 checked: bool = False) -> None:
        from rlcore.rewards.engine import RewardEngine

        self.spec = spec
        self.engine = RewardEngine(spec, judge=judge, checked=checked)
        self.engine.load()  # reward models load now, not inside (and racing in) the first requests
        self.reward_models = [(i, c) for i, c in enumerate(spec.components) if isinstance(c, RewardModelComponent)]
        self.max_rows = max_rows
        # A reward model's forward pass already uses every core: scoring two batches at once only makes both
        # slower. Rule-only specs are bound by the GIL, so a few slots are enough to keep the CPU busy.
        self.max_concurrency = max_concurrency or (1 if self.reward_models else 4)
        self._slots = threading.BoundedSemaphore(self.max_concurrency)
        self.queue_seconds = queue_seconds
        self.label_column = label_column
        self.withdrawn_file = Path(withdrawn_file) if withdrawn_file else None
        self._withdrawn: tuple[float, dict[str, str]] = (-1.0, {})
        self._column_problems: dict[frozenset[str], list[str]] = {}
        self._lock = threading.Lock()
        self.requests = self.completions = self.refused = 0

    # -- checks

    def _withdrawn_paths(self) -> dict[str, str]:
        """``{model path: reason}`` from the withdrawn file (the webapp writes it when a model is deleted);
        re-read only when it changes."""
        if self.withdrawn_file is None:
            return {}
        try:
            mtime = self.withdrawn_file.stat().st_mtime
        except FileNotFoundError:
            return {}
        if mtime != self._withdrawn[0]:
            try:
                data = json.loads(self.withdrawn_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            self._withdrawn = (mtime, {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {})
        return self._withdrawn[1]

    def check_models(self) -> None:
        """Refuse to score with a reward model that was deleted (its folder gone, or withdrawn) since the
        server started: the scores would come from a model its owner no longer stands behind."""
        from rlcore.rewards.check import reward_model_problems

        withdrawn = self._withdrawn_paths()
        for i, component in self.reward_models:
            field = f"spec.components[{i}].path"
            if component.path in withdrawn:
                raise RequestError(409, field, f"reward model {component.name!r} ({component.path}) was deleted "
                                               f"while served: {withdrawn[component.path]}; serve a spec without it")
            if problems := reward_model_problems(component.path):  # a few stat calls; a hub id has none
                raise RequestError(409, field, f"reward model {component.name!r} was deleted while served: "
                                               f"{problems[0]}; serve a spec without it")

    def check_columns(self, rows: Sequence[dict[str, Any]]) -> None:
        """Every column the spec reads must be in the batch, and every row must be scorable by some component
        (the same two checks a GRPO launch makes on its prompt set)."""
        from rlcore.rewards.check import check_spec
        from rlcore.training.grpo import prompt_column_problems

        columns = frozenset(k for row in rows for k in row) - {"prompt", "completion"}
        problems = self._column_problems.get(columns)
        if problems is None:
            problems = [f"{p}; send it in the rows".replace("is not in the dataset", "is in none of the rows") for p in check_spec(self.spec, dataset_columns=columns)
                        if not p.field.endswith(".path")]  # model folders are checked live, in check_models
            self._column_problems[columns] = problems
        problems = problems + [p.replace("prompts", "rows").replace("prompt set", "batch")
                               for p in prompt_column_problems(self.spec, rows)]
        if problems:
            raise RequestError(422, "rows", problems[0], *(("rows", p) for p in problems[1:]))

    # -- scoring

    def score_rows(self, rows: list[dict[str, Any]]) -> ScoreResponse:
        """Score a validated batch (``rows`` as dicts with prompt, completion, columns)."""
        from rlcore.rewards.engine import rows_to_batch

        if len(rows) > self.max_rows:
            raise RequestError(413, "rows", f"{len(rows)} rows in one request; this server takes at most "
                                            f"{self.max_rows} (--max-rows): split the batch, keeping each prompt's "
                                            "group in one request")
        self.check_models()
        self.check_columns(rows)
        if not self._slots.acquire(timeout=self.queue_seconds):
            raise RequestError(503, "request", f"the server is scoring {self.max_concurrency} batches and none "
                                               f"finished within {self.queue_seconds:g} s; retry later")
        try:
            scored = self.engine.score_batch(rows_to_batch(rows, source="rows[]: row"))
        except UserError as exc:
            raise RequestError(422, "rows", str(exc)) from None
        finally:
            self._slots.release()
        with self._lock:
            self.requests += 1
            self.completions += len(rows)
        return ScoreResponse(
            rewards=[r.total for r in scored], raw_rewards=[r.raw_total for r in scored],
            components={name: [r.components[name] for r in scored] for name in self.engine.names},
            unscored=[r.index for r in scored if r.total is None],
        )

    def score(self, body: bytes) -> ScoreResponse:
        try:
            request = ScoreRequest.model_validate_json(body)
        except ValidationError as exc:
            raise _invalid(exc) from None
        return self.score_rows([row.model_dump() for row in request.rows])

    def get_reward(self, body: bytes) -> OpenRLHFResponse:
        try:
            request = OpenRLHFRequest.model_validate_json(body)
        except ValidationError as exc:
            raise _invalid(exc) from None
        rows = self.openrlhf_rows(request)
        scored = self.score_rows(rows)
        return OpenRLHFResponse(rewards=[0.0 if r is None else r for r in scored.rewards], unscored=scored.unscored,
                                components=scored.components)

    def openrlhf_rows(self, request: OpenRLHFRequest) -> list[dict[str, Any]]:
        """Rows from OpenRLHF's shape: each query split after its prompt, labels into the label column."""
        n = len(request.query)
        for name in ("prompts", "labels"):
            values = getattr(request, name)
            if values is not None and len(values) != n:
                raise RequestError(422, name, f"{len(values)} {name} for {n} queries; send one per query")
        if request.labels is not None and self.label_column is None:
            raise RequestError(422, "labels", "this server was started without --label-column, so labels have no "
                                              "column to go to; restart it with --label-column COLUMN")
        rows = []
        for i, query in enumerate(request.query):
            prompt, completion = "", query
            if request.prompts is not None:
                prompt = request.prompts[i]
                at = query.find(prompt)
                if at < 0:
                    raise RequestError(422, f"query[{i}]", f"query {i} does not contain prompts[{i}]; send each "
                                                           "query as its prompt followed by the response")
                completion = query[at + len(prompt):]
            row: dict[str, Any] = {"prompt": prompt, "completion": completion}
            if request.labels is not None:
                row[self.label_column] = request.labels[i]
            rows.append(row)
        return rows

    def health(self) -> HealthResponse:
        return HealthResponse(status="ok", spec=self.spec.name, components=list(self.engine.names),
                              max_rows=self.max_rows, requests=self.requests, completions=self.completions,
                              refused=self.refused)


def openapi_document(service: RewardService | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the server, its schemas taken from the pydantic models above."""
    from pydantic.json_schema import models_json_schema

    models = [ScoreRequest, ScoreResponse, OpenRLHFRequest, OpenRLHFResponse, HealthResponse, ErrorResponse]
    _, top = models_json_schema([(m, "validation" if m.__name__.endswith("Request") else "serialization")
                                 for m in models], ref_template="#/components/schemas/{model}")

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def errors(*codes: int) -> dict[str, Any]:
        return {str(code): {"description": HTTPStatus(code).phrase,
                            "content": {"application/json": {"schema": ref(ErrorResponse)}}} for code in codes}

    def post(summary: str, body: type[BaseModel], out: type[BaseModel]) -> dict[str, Any]:
        return {"post": {"summary": summary, "security": [{"bearer": []}],
                         "requestBody": {"required": True, "content": {"application/json": {"schema": ref(body)}}},
                         "responses": {"200": {"description": "scored",
                                               "content": {"application/json": {"schema": ref(out)}}},
                                       **errors(400, 401, 409, 411, 413, 422, 503)}}}

    title = f"Reward server: {service.spec.name}" if service else "Reward server"
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1",
                 "description": "Scores completions with a Reward Studio reward spec (rlcore.rewards.serve)."},
        "paths": {
            "/score": post("Score a batch: the total and every component of each row", ScoreRequest, ScoreResponse),
            "/get_reward": post("OpenRLHF's remote reward-model protocol", OpenRLHFRequest, OpenRLHFResponse),
            "/health": {"get": {"summary": "Liveness and counters (no token needed)", "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": ref(HealthResponse)}}}}}},
        },
        "components": {"schemas": top.get("$defs", {}),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


# ---------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a trainer sends many batches over one connection
    server: "RewardHTTPServer"

    def log_message(self, format: str, *args: Any) -> None:  # the server logs a summary instead (see serve)
        pass

    def _send(self, status: int, payload: Any, *, close: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if status == 503:
            self.send_header("Retry-After", "1")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, error: RequestError, *, close: bool = False) -> None:
        service = self.server.service
        with service._lock:
            service.refused += 1
        self.server.note_refusal(self.path, error)
        self._send(error.status, error.body(), close=close)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, self.server.service.health().model_dump())
        elif self.path == "/openapi.json":
            self._send(200, self.server.openapi)
        else:
            self._refuse(RequestError(404, "path", f"no such endpoint {self.path!r}: GET /health, GET /openapi.json, "
                                                   "POST /score, POST /get_reward"))

    def do_POST(self) -> None:
        service = self.server.service
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return self._refuse(RequestError(411, "Content-Length", "send the body's length (chunked bodies are not "
                                                                    "accepted)"), close=True)
        try:
            length = int(length_header)
        except ValueError:
            return self._refuse(RequestError(400, "Content-Length", f"not a number: {length_header!r}"), close=True)
        if length > self.server.max_body_bytes:
            # the body is not read: closing the connection is the only way to skip it
            return self._refuse(RequestError(413, "body", f"{length} bytes; this server takes at most "
                                                          f"{self.server.max_body_bytes} per request "
                                                          "(--max-body-bytes): split the batch"), close=True)
        body = self.rfile.read(length)
        if not self._authorised():
            return self._refuse(RequestError(401, "Authorization", "missing or wrong bearer token: send "
                                                                   "'Authorization: Bearer <token>'"))
        try:
            if self.path == "/score":
                result: BaseModel = service.score(body)
            elif self.path == "/get_reward":
                result = service.get_reward(body)
            else:
                raise RequestError(404, "path", f"no such endpoint {self.path!r}: POST /score or POST /get_reward")
        except RequestError as exc:
            return self._refuse(exc)
        except Exception as exc:  # a bug must not take the server down, and the caller must hear of it
            self.server.note_failure(exc)
            return self._send(500, {"detail": [{"field": "request", "message": f"the server failed: {exc}"}]})
        self._send(200, result.model_dump_json().encode())

    def _authorised(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        header = self.headers.get("Authorization", "")
        given = header[7:] if header[:7].lower() == "bearer " else ""
        return hmac.compare_digest(given.encode(), token.encode())


class RewardHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # 16 trainers' connections arriving at once must not be dropped by the kernel's default backlog of 5
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: RewardService, *, token: str | None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.service, self.token, self.max_body_bytes = service, token, max_body_bytes
        self.openapi = openapi_document(service)
        self._log_lock = threading.Lock()
        self.recent_refusals: list[str] = []
        super().__init__(address, _Handler)

    def note_refusal(self, path: str, error: RequestError) -> None:
        with self._log_lock:
            if len(self.recent_refusals) < 20:
                field, message = error.items[0]
                self.recent_refusals.append(f"refused {path} ({error.status}, {field}): {message[:300]}")

    def note_failure(self, exc: Exception) -> None:
        import traceback

        with self._log_lock:
            self.recent_refusals.append("failed: " + "".join(traceback.format_exception(exc))[-2000:])


def read_token(*, token_env: str | None, token_file: str | None) -> str | None:
    """The bearer token from an environment variable or a file (never the command line: ``ps`` shows it)."""
    if token_env:
        token = os.environ.get(token_env, "").strip()
        if not token:
            raise UserError(f"--token-env {token_env}: the environment variable is empty or not set")
        return token
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"--token-file {token_file}: cannot read it ({exc.strerror})") from None
        if not token:
            raise UserError(f"--token-file {token_file}: the file is empty")
        return token
    return None


def serve(service: RewardService, *, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, log_seconds: float = 10.0,
          ready: threading.Event | None = None, stop: threading.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (exit code 128 + the signal) or ``stop`` (0). Prints the address as an rlcore artifact event
    (``{"kind": "artifact", "type": "reward_server", "path": URL, ...}``) once it listens, then a summary
    line of the requests served every ``log_seconds``."""
    import signal

    from rlcore.events import emit_artifact

    if host not in LOOPBACK_HOSTS and token is None:
        raise UserError(f"--host {host} reaches beyond this machine: give a bearer token (--token-env or "
                        "--token-file), or bind to 127.0.0.1")
    try:
        httpd = RewardHTTPServer((host, port), service, token=token, max_body_bytes=max_body_bytes)
    except OSError as exc:
        raise UserError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
    bound_port = httpd.server_address[1]
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{bound_port}"
    stop = stop or threading.Event()
    stopped_by: list[int] = []

    def on_signal(signum, frame) -> None:
        stopped_by.append(signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    emit_artifact("reward_server", url, host=host, port=bound_port, spec=service.spec.name,
                  components=list(service.engine.names), max_rows=service.max_rows,
                  max_concurrency=service.max_concurrency, token_required=token is not None)
    print(f"serving reward spec {service.spec.name!r} at {url} (POST /score, POST /get_reward, GET /health, "
          f"GET /openapi.json; at most {service.max_rows} rows per request, {service.max_concurrency} scored at "
          "once)", flush=True)
    if ready is not None:
        ready.set()
    last = (service.requests, service.completions, service.refused)
    try:
        while not stop.wait(log_seconds):
            now = (service.requests, service.completions, service.refused)
            with httpd._log_lock:
                lines, httpd.recent_refusals = httpd.recent_refusals, []
            for line in lines:
                print(line, flush=True)
            if now != last:
                print(f"served {now[0] - last[0]} requests ({now[1] - last[1]} completions) and refused "
                      f"{now[2] - last[2]} in the last {log_seconds:g} s; {now[0]} requests, {now[1]} completions "
                      "in all", flush=True)
                last = now
    finally:
        httpd.shutdown()
        httpd.server_close()
        print(f"stopped after {service.requests} requests ({service.completions} completions, "
              f"{service.refused} refused)", flush=True)
    # 128 + the signal, as a killed process: a job runner must see a cancelled server, not a finished one
    return 128 + stopped_by[0] if stopped_by else 0


def run_serve(args) -> int:
    """The CLI command: load the spec, build the service, serve."""
    from rlcore.rewards.check import load_spec

    if args.max_rows < 1:
        raise UserError("--max-rows must be at least 1")
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise UserError("--max-concurrency must be at least 1")
    token = read_token(token_env=args.token_env, token_file=args.token_file)
    spec = load_spec(args.spec)  # validated here, where the spec file enters
    judge = None
    if args.judge == "deterministic":
        from rlcore.judges.deterministic import DeterministicJudge

        judge = DeterministicJudge()
    started = time.monotonic()
    service = RewardService(spec, judge=judge, max_rows=args.max_rows, max_concurrency=args.max_concurrency,
                            label_column=args.label_column, withdrawn_file=args.withdrawn_file, checked=True)
    if service.reward_models:
        print(f"loaded {len(service.reward_models)} reward model(s) in {time.monotonic() - started:.1f} s", flush=True)
    return serve(service, host=args.host, port=args.port, token=token, max_body_bytes=args.max_body_bytes,
                 log_seconds=args.log_seconds)
