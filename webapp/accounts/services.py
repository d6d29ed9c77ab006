from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from webapp.accounts.models import ApiToken

TOKEN_PREFIX = "rs_"
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_TOKEN_DAYS = 3650


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def api_token_create(*, user, name: str, expires_in_days: int | None = None) -> tuple[ApiToken, str]:
    """Create a token, valid for ``expires_in_days`` (None: until revoked); returns it with the plain
    value, which is never retrievable again."""
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": "Give the token a name, e.g. the script that will use it."})
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
        raise ValidationError({"expires_in_days": f"A token expires after 1 to {MAX_TOKEN_DAYS} days "
                                                  "(or leave it empty for a token that lasts until revoked)."})
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    token = ApiToken.objects.create(user=user, name=name[:100], prefix=raw[:10], key_hash=_hash(raw),
                                    expires_at=expires_at)
    return token, raw


def api_token_authenticate(raw: str | None):
    """The active user a token belongs to, or None (unknown, revoked, expired, or the user deactivated).

    Looked up on every request, never cached: a revocation, a deactivation or a password change
    elsewhere takes effect on the next call (a per-process cache let revoked tokens work for seconds).
    """
    if not raw or not raw.startswith(TOKEN_PREFIX):
        return None
    now = timezone.now()
    token = (ApiToken.objects.select_related("user").filter(key_hash=_hash(raw), user__is_active=True)
             .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now)).order_by().first())
    if token is None:
        return None
    # Tells the owner which tokens are still in use; once a minute is precise enough, and a write
    # on every request would cost a busy labelling script a database round trip each time.
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def api_token_revoke(*, user, token_id: int) -> bool:
    return ApiToken.objects.filter(user=user, pk=token_id).delete()[0] > 0


def api_tokens_revoke_all(*, user) -> int:
    """Revoke every token of ``user`` (their password changed: whoever held the old one loses access)."""
    return ApiToken.objects.filter(user=user).delete()[0]
