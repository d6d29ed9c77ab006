from __future__ import annotations

import hashlib
import secrets
import time
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from webapp.accounts.models import ApiToken

TOKEN_PREFIX = "rs_"
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def api_token_create(*, user, name: str) -> tuple[ApiToken, str]:
    """Create a token; returns it with the plain value, which is never retrievable again."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "Give the token a name, e.g. the script that will use it."})
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name[:100], prefix=raw[:10], key_hash=_hash(raw))
    return token, raw


# Tokens verified in this process in the last few seconds: a labelling script sends its token with
# every request, and skipping this lookup is a fifth of an API call's cost (bench/annotation_loop.py:
# 106 -> 127 cycles/s). The price: a token revoked, or a user deactivated, in another process still
# works there for up to VERIFIED_TOKEN_SECONDS.
VERIFIED_TOKEN_SECONDS = 5.0
_recently_verified: dict[str, tuple[float, object]] = {}


def api_token_authenticate(raw: str | None):
    """The active user a token belongs to, or None."""
    if not raw or not raw.startswith(TOKEN_PREFIX):
        return None
    key_hash = _hash(raw)
    cached = _recently_verified.get(key_hash)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    token = ApiToken.objects.select_related("user").filter(key_hash=key_hash).order_by().first()
    if token is None or not token.user.is_active:
        return None
    # Tells the owner which tokens are still in use; once a minute is precise enough, and a write
    # on every request would cost a busy labelling script a database round trip each time.
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    _recently_verified[key_hash] = (time.monotonic() + VERIFIED_TOKEN_SECONDS, token.user)
    return token.user


def api_token_revoke(*, user, token_id: int) -> bool:
    for key_hash in ApiToken.objects.filter(user=user, pk=token_id).values_list("key_hash", flat=True):
        _recently_verified.pop(key_hash, None)
    return ApiToken.objects.filter(user=user, pk=token_id).delete()[0] > 0
