"""Errors a user can cause and fix; ``train.py`` prints them as one line instead of a traceback."""


class UserError(ValueError):
    """A mistake in the configuration or the input data, with a message that names the fix."""
