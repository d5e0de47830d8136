"""What an image-generating network declares, and how it fits any image size.

A network that halves its grid ``k`` times (the skip net's scales, the deep decoder's upsamplings counted
backwards) needs sides that are multiples of its ``downsampling_factor`` 2^k. Raw MRI and CT sizes rarely
are, and cropping the image would lose field of view, so the network works on a *working grid*: each side
rounded up to a multiple of the factor (and to the minimum its coarsest scale needs). The input z is made
on that grid (a measurement used as z is reflection-padded to it, :func:`pad_to`), and the output is cropped
back to the image's grid inside ``forward`` (:func:`crop_to`), so the operator, the loss, the metrics and
the saved images only ever see the image's own size. Padding and cropping are centred: the image sits in
the middle of the working grid, where a reflection-padded input puts it.

The crop target is set once, when the run is assembled (:meth:`ImageNetwork.fit_to`, called by
``UntrainedModule``). It is a plain attribute, not a parameter or buffer: state dicts, checkpoints, OES
masks and ``torch.func.functional_call`` over stacked weights are those of the network without it. For an
image whose sides are already multiples of the factor nothing is padded or cropped.

A new 2D network (e.g. a U-Net) subclasses :class:`ImageNetwork`, sets ``downsampling_factor`` (and ``dim``,
``min_coarsest_size``, ``autocast_safe``, ``normalises_coarsest_scale`` where they differ from the
defaults) and implements :meth:`ImageNetwork.generate`; any image size then works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from untrained.errors import UserError, check_integer

MAX_CHANNELS = 4096  # per layer (DIP: 128); a 3×3 convolution of 4096 channels has 151M weights


def channels_per_level(value, levels: int, name: str, levels_option: str, minimum: int = 1) -> list[int]:
    """``network.<name>``: one channel count for every level (scale), or a single count for all of them."""
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * levels
    if len(values) != levels:
        raise UserError(
            f"network.{name} has {len(values)} entries but network.{levels_option}={levels}: give one per level."
        )
    for channels in values:
        check_integer(f"network.{name}", channels, minimum, MAX_CHANNELS)
    return values


def _margins(size: int, target: int) -> tuple[int, int]:
    """(before, after) that centre ``size`` pixels in ``target`` (the odd pixel goes after)."""
    before = (target - size) // 2
    return before, target - size - before


def pad_to(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Centre ``x`` (B, C, *spatial) in a larger grid ``shape``, padding by reflection (an image's natural
    continuation) or, where a side is too short to reflect that far, by replicating its edge."""
    spatial = tuple(x.shape[2:])
    shape = tuple(shape)
    if spatial == shape:
        return x
    if len(shape) != len(spatial) or any(t < n for n, t in zip(spatial, shape)):
        raise ValueError(f"pad_to: cannot pad a {'x'.join(map(str, spatial))} grid to {'x'.join(map(str, shape))}.")
    pads = [_margins(n, t) for n, t in zip(spatial, shape)]
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad lists the last axis first
    reflectable = all(max(pair) < n for pair, n in zip(pads, spatial))
    return F.pad(x, flat, mode="reflect" if reflectable else "replicate")


def crop_to(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The centred ``shape`` window of ``x`` (..., *spatial): the inverse of :func:`pad_to`."""
    spatial = tuple(x.shape[x.ndim - len(shape) :])
    if spatial == tuple(shape):
        return x
    starts = [_margins(t, n)[0] for n, t in zip(spatial, shape)]
    return x[(..., *(slice(start, start + t) for start, t in zip(starts, shape)))]


class Network(nn.Module):
    """Base of the networks: what a network declares, and how its forward runs.

    Declarations (class or instance attributes, read by the run's assembly, the fast path and the methods):
        dim: spatial axes of the signals it maps to (1 signals, 2 images; None: any).
        downsampling_factor: the working grid's sides are multiples of it (see :class:`ImageNetwork`).
        autocast_safe: bf16 autocast was measured to keep the fit's quality (``performance.autocast=auto``).
        normalises_coarsest_scale: a BatchNorm acts at the coarsest scale, which must then keep more than one
            pixel.

    Subclasses implement :meth:`compute`, the network's map. ``forward`` runs it as written, or through
    ``execution`` when the fast path set one (``speed.runner.FastForward``: channels-last, bf16 autocast,
    compilation), so parameter names, state dicts and checkpoints are the same on either path.
    """

    dim: int | None = None
    downsampling_factor: int = 1
    autocast_safe: bool = False
    normalises_coarsest_scale: bool = False

    def __init__(self):
        super().__init__()
        self.execution = None  # a callable z -> output that runs ``compute`` on the fast path; None: eager

    def compute(self, z: torch.Tensor) -> torch.Tensor:
        """The network's map."""
        raise NotImplementedError

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.compute(z) if self.execution is None else self.execution(z)


class ImageNetwork(Network):
    """Base of the networks mapping an input z to an image on a grid of ``dim`` axes.

    Declarations beyond :class:`Network`'s:
        min_coarsest_size: pixels per axis the coarsest scale needs (reflection padding needs more pixels
            than it pads), so the working grid's sides are at least ``min_coarsest_size * downsampling_factor``.

    Subclasses set ``in_channels`` and implement :meth:`generate` (z on the working grid → output on it).
    """

    dim: int = 2
    min_coarsest_size: int = 1

    def __init__(self):
        super().__init__()
        self.image_grid: tuple[int, ...] | None = None  # the spatial shape outputs are cropped to; None: no crop

    # Sizes --------------------------------------------------------------------------------------
    def working_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """The grid the network works on for an image grid ``spatial``: each side rounded up to a multiple
        of the downsampling factor, and at least ``min_coarsest_size`` times it."""
        factor = self.downsampling_factor
        return tuple(factor * max(math.ceil(n / factor), self.min_coarsest_size) for n in spatial)

    def input_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of z (without the batch axis) for an image of shape (C, *spatial)."""
        return (self.in_channels, *self.working_shape(image_shape[1:]))

    def minimum_side(self) -> int:
        """The shortest image side the network takes: padding may at most double a side."""
        return max(1, math.ceil(self.downsampling_factor * self.min_coarsest_size / 2))

    def fit_to(self, image_shape: Sequence[int]) -> None:
        """Check that images of ``image_shape`` (C, *spatial) fit, and crop outputs to their grid from now on."""
        spatial = tuple(image_shape[1:])
        if len(spatial) != self.dim:
            raise ValueError(f"{type(self).__name__} is {self.dim}D but the images are {len(spatial)}D.")
        size, factor = "x".join(map(str, spatial)), self.downsampling_factor
        shortest = self.minimum_side()
        if min(spatial) < shortest:
            raise UserError(
                f"task.size: the image ({size}) is too small for the network, whose grid is padded to a multiple "
                f"of its downsampling factor {factor}: use task.size >= {shortest} on every side or fewer network "
                f"scales."
            )
        working = self.working_shape(spatial)
        if self.normalises_coarsest_scale and math.prod(n // factor for n in working) < 2:
            raise UserError(
                f"task.size: the image ({size}) leaves one pixel at the network's coarsest scale (downsampling "
                f"factor {factor}), where BatchNorm has nothing to normalise: use task.size >= {factor + 1} or "
                f"fewer network scales."
            )
        self.image_grid = spatial if working != spatial else None

    # Forward ------------------------------------------------------------------------------------
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """The network's map on the working grid."""
        raise NotImplementedError

    def compute(self, z: torch.Tensor) -> torch.Tensor:
        output = self.generate(z)
        return output if self.image_grid is None else crop_to(output, self.image_grid)
