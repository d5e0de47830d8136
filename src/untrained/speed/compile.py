"""``torch.compile`` that falls back to eager execution, with one warning, when compilation fails."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def first_line(error: Exception, limit: int = 200) -> str:
    """The first line of an error's message (compiler errors run to pages)."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else ""


class CompiledWithFallback:
    """``torch.compile(fn)`` that falls back to ``fn`` (eager), with one clear warning, if compilation fails.

    Compilation happens lazily at the first call (and again for new shapes), so that is where errors
    surface; compile errors are raised before the compiled code runs, so running ``fn`` eagerly then
    repeats nothing. A genuine error in ``fn`` is raised again by the eager call.
    """

    def __init__(self, fn: Callable, name: str, mode: str | None = None, backend="inductor"):
        self.eager, self.name = fn, name
        self.compiled = torch.compile(fn, mode=mode, backend=backend)
        self.failed = False

    def __call__(self, *args, **kwargs):
        if self.failed:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 -- any compiler failure means: run eagerly
            self.fall_back(error)
            return self.eager(*args, **kwargs)

    def fall_back(self, error: Exception) -> None:
        self.failed = True
        log.warning(
            "torch.compile of the %s failed (%s: %s); running it eagerly instead. "
            "Set performance.compile=false to skip compilation.",
            self.name,
            type(error).__name__,
            first_line(error),
        )

    def probe(self, example: torch.Tensor) -> None:
        """Compile now and run one backward pass on ``example`` (a stateless function only): errors that
        the compiled backward raises, past this wrapper's reach during training, fall back here."""
        try:
            self.compiled(example.detach().requires_grad_()).backward()
        except Exception as error:  # noqa: BLE001
            self.fall_back(error)
