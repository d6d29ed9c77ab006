from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from webapp.accounts.models import ApiToken
from webapp.accounts.services import api_token_create, api_token_revoke


@login_required
def account(request: HttpRequest) -> HttpResponse:
    new_token = None
    error = None
    if request.method == "POST":
        try:
            _, new_token = api_token_create(user=request.user, name=request.POST.get("name", ""))
        except ValidationError as exc:
            error = exc.message_dict["name"][0]
    tokens = ApiToken.objects.filter(user=request.user)
    return render(request, "accounts/account.html", {"tokens": tokens, "new_token": new_token, "error": error})


@login_required
@require_POST
def revoke_token(request: HttpRequest, token_id: int) -> HttpResponse:
    if api_token_revoke(user=request.user, token_id=token_id):
        messages.success(request, "Token revoked.")
    return redirect("account")
