"""The API's boundary: input PostgreSQL cannot store is refused, and every error answer is JSON.

- A NUL character (``\\u0000``) in a JSON body, a query parameter, a form field or the path is answered
  422 ``{"detail": [{"field", "message"}]}`` naming the field: PostgreSQL refuses NUL in text and jsonb,
  which used to surface as a 500 from deep inside whichever service wrote it. A page's form (POST) with
  one gets a 422 page in the app's layout naming the field.
- Error answers that do not come from an endpoint (Django's 404 for an unknown URL, ninja's 405, a 400
  for a bad request, a 500 page) are turned into ``{"detail": "..."}`` as the README promises.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse

API_PREFIX = "/api/"
FORM_METHODS = frozenset({"POST", "PUT", "PATCH"})
NUL_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored; remove it"


def nul_field(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or key) holding a NUL character, or None.

    >>> nul_field({"a": [1, {"b": "x\\x00"}]}), nul_field({"a": "ok"})
    ('a[1].b', None)
    """
    stack = [(path, value)]
    while stack:  # iterative: a body nested thousands deep must not exhaust the stack here
        at, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return at or "body"
        elif isinstance(item, dict):
            for key, child in item.items():
                name = f"{at}.{key}" if at else str(key)
                if "\x00" in str(key):
                    return name
                stack.append((name, child))
        elif isinstance(item, list):
            stack.extend((f"{at}[{i}]", child) for i, child in enumerate(item))
    return None


def _request_nul_field(request: HttpRequest) -> str | None:
    if "\x00" in request.path:
        return "path"
    for key, values in request.GET.lists():
        if "\x00" in key or any("\x00" in v for v in values):
            return key
    content_type = request.content_type or ""
    if content_type == "application/json":
        body = request.body
        if b"\\u0000" in body:  # cheap test first; parse only a body that may hold one
            try:
                return nul_field(json.loads(body))
            except (ValueError, RecursionError):
                return None  # not JSON: the endpoint answers 400
    elif content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        for key, values in request.POST.lists():
            if "\x00" in key or any("\x00" in v for v in values):
                return key
        for key, upload in request.FILES.items():
            if "\x00" in (upload.name or ""):
                return key
    return None


def _json_error(response: HttpResponse) -> HttpResponse:
    if response.status_code < 400 or response.get("Content-Type", "").startswith("application/json"):
        return response
    reason = HTTPStatus(response.status_code).phrase if response.status_code in HTTPStatus._value2member_map_ \
        else response.reason_phrase
    detail = {404: "Not found: no such API endpoint (see /api/v1/openapi.json)",
              405: f"Method not allowed here (allowed: {response.get('Allow', '')})",
              500: "Internal error; the server log has the details"}.get(response.status_code, reason)
    answer = JsonResponse({"detail": detail}, status=response.status_code)
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if header in response:
            answer[header] = response[header]
    return answer


class ApiBoundaryMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if iscoroutinefunction(self.get_response):
            return self._acall(request)
        if not request.path.startswith(API_PREFIX):
            if request.method in FORM_METHODS and (field := _request_nul_field(request)):
                return _nul_page(request, field)
            return self.get_response(request)
        if field := _request_nul_field(request):
            return _nul_answer(field)
        return _json_error(self.get_response(request))

    async def _acall(self, request: HttpRequest):
        if not request.path.startswith(API_PREFIX):
            if request.method in FORM_METHODS and (field := _request_nul_field(request)):
                return _nul_page(request, field)
            return await self.get_response(request)
        if field := _request_nul_field(request):
            return _nul_answer(field)
        return _json_error(await self.get_response(request))


def _nul_page(request: HttpRequest, field: str) -> HttpResponse:
    # Pages too: some views read raw POST fields (the rubric editor's criteria), which no form field checks.
    from django.shortcuts import render

    return render(request, "bad_input.html", {"reason": f"The field {field} {NUL_MESSAGE}."}, status=422)


def _nul_answer(field: str) -> JsonResponse:
    return JsonResponse({"detail": [{"field": field, "message": f"{field} {NUL_MESSAGE}"}]}, status=422)
