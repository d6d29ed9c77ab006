"""API keys at rest: Fernet (AES-128-CBC + HMAC) with a key derived from SECRET_KEY.

Rotating SECRET_KEY makes stored judge keys unreadable: the judge page then asks for the key again
(decrypt_api_key returns None) instead of failing a job with a confusing error.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


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
