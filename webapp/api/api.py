"""The REST API: one NinjaAPI, routers contributed by each app, OpenAPI at /api/v1/openapi.json.

Authentication: `Authorization: Bearer <token>` (tokens from the Account page or
POST /api/v1/auth/token), or the browser session (with CSRF) for the pages' own htmx calls.
Errors are JSON: {"detail": "..."} or, for input a user can fix,
{"detail": [{"field": "name", "message": "..."}]} with status 422, ninja's own request validation included.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError
from ninja.errors import ValidationError as RequestValidationError
from ninja.security import HttpBearer, django_auth

from rlcore.errors import UserError
from webapp.accounts.services import api_token_authenticate
from webapp.annotation.services import LabelConflict
from webapp.forms_util import error_list, pydantic_errors

logger = logging.getLogger(__name__)


class TokenAuth(HttpBearer):
    def authenticate(self, request, token: str):
        user = api_token_authenticate(token)
        if user is not None:
            request.user = user
        return user


_ERROR = {"type": "object", "properties": {"detail": {
    "oneOf": [{"type": "string"},
              {"type": "array", "items": {"type": "object", "properties": {
                  "field": {"type": "string"}, "message": {"type": "string"}}}}]}}}
_ERROR_ANSWERS = {
    "400": "the body is not valid JSON",
    "401": "missing or invalid API token",
    "403": "your role in the project does not allow this",
    "404": "no such project or object (or not visible to you)",
    "422": "a field is wrong: detail lists each field and what to fix",
}


class RewardStudioAPI(NinjaAPI):
    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        """The generated schema, with the error answers each operation can give (all JSON, one shape)."""
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                codes = ["422"]
                if operation.get("security"):
                    codes.append("401")
                if "{project_id}" in path:
                    codes += ["403", "404"]
                if "requestBody" in operation:
                    codes.append("400")
                for code in codes:
                    operation.setdefault("responses", {}).setdefault(code, {
                        "description": _ERROR_ANSWERS[code],
                        "content": {"application/json": {"schema": _ERROR}}})
        return schema


api = RewardStudioAPI(
    title="Reward Studio API",
    version="1",
    description="Everything the Reward Studio pages can do, for scripts and other tools.",
    auth=[TokenAuth(), django_auth],
    urls_namespace="api",
)


@api.exception_handler(ValidationError)
def on_validation_error(request, exc: ValidationError):
    return api.create_response(request, {"detail": error_list(exc)}, status=422)


@api.exception_handler(UserError)
def on_user_error(request, exc: UserError):
    # rlcore's refusals (too little to fit, an ensemble of one, a bad spec) are the user's to fix, never a 500;
    # an error that knows its field (a `field` attribute) names it.
    return api.create_response(
        request, {"detail": [{"field": getattr(exc, "field", None) or "__all__", "message": str(exc)}]}, status=422)


# Where ninja found a wrong parameter; the field is named without it, as the services name theirs.
_PARAM_SOURCES = {"body", "query", "path", "form", "file", "header", "cookie"}


def request_errors(errors: list[dict]) -> ValidationError:
    """ninja's request validation errors (pydantic's shape, loc starting with the source) as a service's.

    A body loc is ``("body", <parameter>, *field)``: every endpoint takes one body schema, so the parameter
    name is dropped too. Errors without a loc (ninja's pagination) are already ``{field: message}``.
    """
    located = []
    for error in errors:
        if "loc" not in error:
            located += [{"loc": (field,), "msg": str(message)} for field, message in error.items()]
            continue
        loc = tuple(error["loc"])
        if loc and loc[0] in _PARAM_SOURCES:
            loc = (loc[2:] or ("body",)) if loc[0] == "body" else (loc[1:] or (loc[0],))
        located.append({"loc": loc, "msg": error.get("msg", "invalid value"), "type": error.get("type")})
    return pydantic_errors(located)


@api.exception_handler(RequestValidationError)
def on_request_validation_error(request, exc: RequestValidationError):
    return on_validation_error(request, request_errors(exc.errors))


@api.exception_handler(LabelConflict)
def on_label_conflict(request, exc: LabelConflict):
    # the label cannot be taken in the item's state now (already labelled, expired, a closed project)
    return api.create_response(request, {"detail": str(exc)}, status=409)


@api.exception_handler(PermissionDenied)
def on_permission_denied(request, exc: PermissionDenied):
    return api.create_response(request, {"detail": str(exc) or "Forbidden"}, status=403)


@api.exception_handler(Http404)
def on_not_found(request, exc: Http404):
    return api.create_response(request, {"detail": str(exc) or "Not found"}, status=404)


@api.exception_handler(Exception)
def on_unexpected_error(request, exc: Exception):
    # ninja re-raises these to Django's HTML 500 page; the API promises JSON, and the log keeps the traceback
    logger.exception("API error on %s %s", request.method, request.path)
    return api.create_response(request, {"detail": "Internal error; the server log has the details"}, status=500)


@api.exception_handler(AuthenticationError)
def on_unauthenticated(request, exc: AuthenticationError):
    return api.create_response(
        request,
        {"detail": "Missing or invalid API token: send 'Authorization: Bearer <token>' "
                   "(create one on your Account page or with POST /api/v1/auth/token)."},
        status=401,
    )


from webapp.accounts.apis import router as accounts_router  # noqa: E402
from webapp.analysis.apis import router as analysis_router  # noqa: E402
from webapp.annotation.apis import router as annotation_router  # noqa: E402
from webapp.datasets.apis import router as datasets_router  # noqa: E402
from webapp.jobs.apis import router as jobs_router  # noqa: E402
from webapp.judging.apis import router as judging_router  # noqa: E402
from webapp.training.apis import router as training_router  # noqa: E402
from webapp.projects.apis import router as projects_router  # noqa: E402
from webapp.rubrics.apis import router as rubrics_router  # noqa: E402
from webapp.routing.apis import router as routing_router  # noqa: E402
from webapp.rounds.apis import router as rounds_router  # noqa: E402

api.add_router("/auth", accounts_router)
api.add_router("/projects", projects_router)
api.add_router("/projects", jobs_router)
api.add_router("/projects", training_router)
api.add_router("/projects", rubrics_router)
api.add_router("/projects", datasets_router)
api.add_router("/projects", annotation_router)
api.add_router("/projects", judging_router)
api.add_router("/projects", routing_router)
api.add_router("/projects", analysis_router)
api.add_router("/projects", rounds_router)
