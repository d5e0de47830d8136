"""Errors a user can cause and fix; ``train.py`` prints them as one line instead of a traceback."""


class UserError(ValueError):
    """A mistake in the configuration or the input data, with a message that names the fix."""


def check_choice(option: str, value, choices) -> None:
    """Stop with a message naming the valid choices when ``value`` (the setting ``option``) is not one of them."""
    if value not in choices:
        raise UserError(f"{option} must be one of {tuple(choices)}, got '{value}'.")


def check_at_least(option: str, value, minimum) -> None:
    """Stop with a message naming the bound when ``value`` (the setting ``option``) is below ``minimum``."""
    if value < minimum:
        raise UserError(f"{option} must be >= {minimum}, got {value}.")
