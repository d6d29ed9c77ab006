"""The sign-in throttle as an authentication backend."""

from axes.backends import AxesStandaloneBackend


class ThrottledSignInBackend(AxesStandaloneBackend):
    """django-axes' check, for sign-ins that come with a request (the login page, the token endpoint).

    A call without one (``manage.py`` commands, code that verifies a password, the test client's
    ``login``) has no client address to count failures by: it is not throttled, instead of being
    refused as AxesStandaloneBackend does.
    """

    def authenticate(self, request=None, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
