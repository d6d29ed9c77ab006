from django.conf import settings
from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from webapp.accounts.models import ApiToken
from webapp.accounts.services import MAX_TOKEN_DAYS, api_token_create, api_token_revoke


def _expiry_days(raw: str) -> int | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError({"expires_in_days": f"Give the number of days the token lasts (1 to {MAX_TOKEN_DAYS}), "
                                                  "or leave it empty."}) from None


@login_required
def account(request: HttpRequest) -> HttpResponse:
    new_token = None
    error = None
    password_form = PasswordChangeForm(request.user)
    if request.method == "POST" and request.POST.get("action") == "password":
        password_form = PasswordChangeForm(request.user, request.POST)
        if password_form.is_valid():
            user = password_form.save()  # the save revokes every API token (webapp.accounts.signals)
            update_session_auth_hash(request, user)  # this browser stays signed in; other sessions end
            messages.success(request, "Password changed. Every API token was revoked: create new ones.")
            return redirect("account")
    elif request.method == "POST":
        try:
            _, new_token = api_token_create(user=request.user, name=request.POST.get("name", ""),
                                            expires_in_days=_expiry_days(request.POST.get("expires_in_days", "")))
        except ValidationError as exc:
            error = next(iter(exc.message_dict.values()))[0]
    tokens = ApiToken.objects.filter(user=request.user)
    return render(request, "accounts/account.html", {
        "tokens": tokens, "new_token": new_token, "error": error, "password_form": password_form,
        "max_token_days": MAX_TOKEN_DAYS}, status=422 if error or password_form.errors else 200)


@login_required
@require_POST
def revoke_token(request: HttpRequest, token_id: int) -> HttpResponse:
    if api_token_revoke(user=request.user, token_id=token_id):
        messages.success(request, "Token revoked.")
    return redirect("account")


def locked_out(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """What a sign-in refused by the throttle (django-axes) gets: JSON from the API, the login page else."""
    minutes = round(settings.AXES_COOLOFF_TIME * 60)
    message = (f"Too many wrong passwords for this username from your address: sign-in is refused for "
               f"{minutes} minutes. Wait, or ask an administrator to reset it (manage.py axes_reset).")
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": message}, status=429)
    else:
        form = AuthenticationForm(request, data=request.POST or None)
        form.errors.clear()
        response = render(request, "accounts/login.html", {"form": form, "locked_out": message}, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response
