"""Errors a user can cause and fix; ``train.py`` prints them as one line instead of a traceback.

The ``check_*`` helpers make an option check one line that names the option as the user writes it
(``task.kernel.length``) and the valid range. Comparisons are written so that NaN fails them.
"""

import math
import numbers

import numpy as np

# Options named like this are random seeds: numpy's generators take whole numbers in [0, 2³²).
SEED_MAX = 2**32 - 1


class UserError(ValueError):
    """A mistake in the configuration or the input data, with a message that names the fix."""


def check_choice(option: str, value, choices) -> None:
    """Stop with a message naming the valid choices when ``value`` (the setting ``option``) is not one of them."""
    if value not in choices:
        raise UserError(f"{option} must be one of {tuple(choices)}, got '{value}'.")


def check_number(option: str, value) -> None:
    """Stop unless ``value`` is a finite real number (not a string, a list or a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UserError(f"{option} must be a finite number, got {value!r}.")


def check_at_least(option: str, value, minimum) -> None:
    """Stop with a message naming the bound when ``value`` (the setting ``option``) is below ``minimum``."""
    check_number(option, value)
    if not value >= minimum:
        raise UserError(f"{option} must be >= {minimum}, got {value}.")


def check_positive(option: str, value) -> None:
    """Stop unless ``value`` is a finite number > 0."""
    check_number(option, value)
    if not value > 0:
        raise UserError(f"{option} must be > 0, got {value}.")


def check_in_range(option: str, value, low, high, *, low_open: bool = False, high_open: bool = False) -> None:
    """Stop unless ``low <= value <= high`` (``<`` on an open side); the message writes the interval."""
    check_number(option, value)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise UserError(f"{option} must be in {interval}, got {value}.")


def check_integer(option: str, value, minimum: int, maximum: int | None = None) -> None:
    """Stop unless ``value`` is a whole number (an int, not 3.0) in [minimum, maximum] (no maximum when None)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise UserError(f"{option} must be a whole number {bounds}, got {value!r}.")


def check_finite(what: str, array) -> None:
    """Stop when data (a numpy array or tensor, real or complex) holds NaN or ±Inf; ``what`` names it and its source."""
    values = np.asarray(array.detach().cpu() if hasattr(array, "detach") else array)
    finite = np.isfinite(values)
    if not finite.all():
        raise UserError(
            f"{what} holds {int(finite.size - finite.sum())} NaN or Inf values: clean the data or give another file."
        )


def check_array(what: str, array, ranks: tuple[int, ...], kinds: str = "iuf") -> np.ndarray:
    """Loaded data as it must be before anything is computed from it: of a numpy dtype kind in ``kinds`` (integers,
    floats; "b" adds bools, "c" complex numbers), one of the ``ranks``, not empty, finite. The one check of every
    loader (images, kernels, masks, CT slices, k-space)."""
    array = np.asarray(array)
    if array.dtype.kind not in kinds:
        names = {"b": "bools", "i": "integers", "u": "integers", "f": "floats", "c": "complex numbers"}
        *others, last = dict.fromkeys(names[kind] for kind in kinds)
        expected = f"{', '.join(others)} or {last}" if others else last
        raise UserError(f"{what} has dtype {array.dtype}: give an array of {expected}.")
    if array.ndim not in ranks:
        raise UserError(f"{what} has shape {array.shape}: expected {' or '.join(f'{n}D' for n in ranks)} data.")
    if array.size == 0:
        raise UserError(f"{what} is empty (shape {array.shape}): give a file with data.")
    check_finite(what, array)
    return array


def read_npy(path, what: str) -> np.ndarray:
    """``numpy.load`` of a user's .npy file; unreadable files (and pickled objects) stop with a one-line message."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise UserError(f"Cannot read {what} '{path}' as a .npy array ({error}): save it with numpy.save.") from None


def check_options(node, path: str = "") -> None:
    """No NaN or ±Inf anywhere in a (plain) config tree, and whole numbers in [0, 2³²) for every ``*seed`` option.

    One guard for every numeric option, naming its full path; per-option ranges live where the option is used."""
    if isinstance(node, dict):
        for key, value in node.items():
            check_options(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            check_options(value, f"{path}[{index}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise UserError(f"{path}={node} is not a number: give a finite value.")
    elif path.rsplit(".", 1)[-1].endswith("seed") and node is not None:
        check_integer(path, node, 0, SEED_MAX)
