"""The error a user can cause and fix (bad path, bad column, bad value): printed as one line."""


class GuimError(Exception):
    """A problem with the user's input or environment; the message names it and the fix."""
