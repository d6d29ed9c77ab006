"""Errors a user can cause and fix. The CLI prints them without a traceback; the webapp turns
them into form or API validation errors. Each message names what is wrong: file, line, field."""


class UserError(ValueError):
    """A problem in user input (a file, a spec, a field) with a message that says what to fix."""
