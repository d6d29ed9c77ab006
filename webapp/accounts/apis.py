from django.contrib.auth import authenticate
from ninja import Router, Schema
from ninja.errors import HttpError

from webapp.accounts.services import api_token_create

router = Router(tags=["auth"])


class TokenRequest(Schema):
    username: str
    password: str
    name: str = "api"


class TokenOut(Schema):
    token: str
    name: str
    prefix: str


@router.post("/token", response=TokenOut, auth=None, summary="Exchange a username and password for an API token")
def create_token(request, body: TokenRequest):
    user = authenticate(request, username=body.username, password=body.password)
    if user is None:
        raise HttpError(401, "Wrong username or password.")
    token, raw = api_token_create(user=user, name=body.name)
    return {"token": raw, "name": token.name, "prefix": token.prefix}
