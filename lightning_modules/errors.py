"""Errors a user can cause. Entry points print them as one line and exit non-zero."""


class UserError(Exception):
    """A problem with the user's input (path, file, config value), with the fix in the message."""
