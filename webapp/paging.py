"""Paging parameters shared by the API's list endpoints (one definition of their bounds). Outside webapp/api, which
mounts every app's router: an app importing from there would be imported back."""

from ninja import Query

# PostgreSQL's OFFSET is a bigint: 10^20 used to reach it and fail with a 500; no list is this long.
OFFSET_MAX = 2**31 - 1


def offset_param():
    return Query(0, ge=0, le=OFFSET_MAX, description=f"rows to skip, 0 to {OFFSET_MAX:,}")
