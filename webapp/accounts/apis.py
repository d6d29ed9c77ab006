from datetime import datetime

from django.contrib.auth import authenticate, user_logged_in
from ninja import Field, Router, Schema
from ninja.errors import HttpError

from webapp.accounts.services import api_token_create

router = Router(tags=["auth"])


class TokenRequest(Schema):
    username: str
    password: str
    name: str = "api"
    expires_in_days: int | None = Field(None, description="Days the token lasts; empty: until revoked. "
                                                          "A password change revokes every token.")


class TokenOut(Schema):
    token: str
    name: str
    prefix: str
    expires_at: datetime | None


@router.post("/token", response=TokenOut, auth=None, summary="Exchange a username and password for an API token",
             description="Wrong passwords are throttled: after LOGIN_FAILURE_LIMIT of them for one username from "
                         "one address the answer is 429 for LOGIN_COOLOFF_MINUTES.")
def create_token(request, body: TokenRequest):
    user = authenticate(request, username=body.username, password=body.password)
    if user is None:
        raise HttpError(401, "Wrong username or password.")
    token, raw = api_token_create(user=user, name=body.name, expires_in_days=body.expires_in_days)
    # A sign-in like the login page's: records last_login and clears the throttle's failure count.
    user_logged_in.send(sender=type(user), request=request, user=user)
    return {"token": raw, "name": token.name, "prefix": token.prefix, "expires_at": token.expires_at}
