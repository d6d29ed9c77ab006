"""API keys of the LM endpoints the app calls (judges, policies served over HTTP): stored encrypted, or named
as an environment variable the operator allows, and checked for what an HTTP header can carry.

Judges (webapp.judging) and policies (webapp.training) both keep such keys; this module is below both apps,
so neither imports the other for it.

At rest: Fernet (AES-128-CBC + HMAC) with a key derived from SECRET_KEY. Rotating SECRET_KEY makes stored
keys unreadable: the page then asks for the key again (decrypt_api_key returns None) instead of failing a job
with a confusing error.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

ENV_NAME_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def _fernet() -> Fernet:
    digest = hashlib.sha256(b"reward-studio/judge-api-key/" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt_api_key(key: str) -> str:
    return _fernet().encrypt(key.encode()).decode()


def decrypt_api_key(token: str) -> str | None:
    if not token:
        return None
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        return None


def key_env_problem(name: str) -> str | None:
    """Why a judge or a policy endpoint may not read its API key from environment variable ``name``, or None.

    Only variables the operator lists in JUDGE_KEY_ENV_ALLOWLIST: the key is sent as a bearer token
    to the endpoint the designer chose, so naming DATABASE_URL or SECRET_KEY would hand it over.
    """
    if not set(name) <= ENV_NAME_CHARS or name[0].isdigit():
        return "An environment variable name has letters, digits and _ only (e.g. JUDGE_API_KEY)."
    allowed = settings.JUDGE_KEY_ENV_ALLOWLIST
    if name not in allowed:
        listed = f"one of {', '.join(allowed)}" if allowed else "none is allowed on this server"
        return (f"{name} is not a judge key variable the operator allows ({listed}; JUDGE_KEY_ENV_ALLOWLIST). "
                "Paste the key instead: it is stored encrypted.")
    return None


def api_key_problem(key: str) -> str | None:
    """Why ``key`` cannot be sent as a bearer token, or None: HTTP headers carry ASCII only, and a key with
    other characters used to fail with a 500 when the judge was first called."""
    if not key.isascii() or not key.isprintable():
        return "An API key has printable ASCII characters only; paste it again without other characters."
    return None

