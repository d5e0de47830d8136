"""Orthogonal 2D discrete wavelet transform with periodic boundaries, for any image size.

Each level filters the current approximation block along both axes with an orthogonal filter pair (low, high)
and keeps every second sample, circularly (PyWavelets' ``mode='periodization'``): one level along an axis of
even length N is an N×N orthogonal matrix. An odd length keeps its last sample unfiltered in the approximation
band (approximation ⌈N/2⌉, detail ⌊N/2⌋ entries), so the transform stays orthogonal for sizes that are not
multiples of 2^levels (e.g. 37×45). The coefficients have the image's shape: the approximation in the top-left
block, as ``pywt.coeffs_to_array`` lays them out. The adjoint is the inverse.
"""

from __future__ import annotations

import math

import torch

from untrained.errors import UserError, check_integer
from untrained.operators.base import LinearOperator

# Reconstruction low-pass filters (PyWavelets' ``Wavelet(name).rec_lo``; Daubechies' db4 has 8 taps).
LOW_PASS = {
    "haar": (1 / math.sqrt(2), 1 / math.sqrt(2)),
    "db4": (
        0.2303778133088965,
        0.7148465705529157,
        0.6308807679298589,
        -0.027983769416859854,
        -0.18703481171909309,
        0.030841381835560764,
        0.0328830116668852,
        -0.010597401785069032,
    ),
}
MAX_LEVELS = 16


def max_levels(side: int, taps: int) -> int:
    """PyWavelets' ``dwt_max_level``: levels whose approximations keep at least ``taps - 1`` samples."""
    return max(int(math.floor(math.log2(side / (taps - 1)))), 0) if side >= taps - 1 else 0


def analysis_matrix(length: int, low: torch.Tensor) -> torch.Tensor:
    """One periodic DWT level along an axis: (length, length), rows [low-pass; odd last sample; high-pass]."""
    taps = low.numel()
    high = low.flip(0) * torch.tensor([(-1.0) ** k for k in range(taps)], dtype=low.dtype)  # rec_hi
    even = length - length % 2
    half = even // 2
    matrix = torch.zeros(length, length, dtype=low.dtype)
    for n in range(half):
        for k in range(taps):
            column = (2 * n + k + 1 - taps // 2) % even  # PyWavelets' alignment
            matrix[n, column] += low[k]
            matrix[length - half + n, column] += high[k]
    if length % 2:
        matrix[half, length - 1] = 1.0  # the odd sample passes into the approximation band
    return matrix


class Wavelet2D(LinearOperator):
    """Ψ: (B, H, W) images → (B, H, W) coefficients of an orthogonal ``levels``-level DWT (ΨᴴΨ = ΨΨᴴ = I).

    ``levels`` is capped at PyWavelets' maximum for the smaller side (at least one level).
    """

    def __init__(self, shape: tuple[int, int], wavelet: str = "db4", levels: int = 4, dtype=torch.complex64):
        super().__init__()
        if wavelet not in LOW_PASS:
            raise UserError(f"task.wavelet='{wavelet}' is unknown: choose one of {', '.join(LOW_PASS)}.")
        check_integer("task.wavelet_levels", levels, 1, MAX_LEVELS)
        height, width = shape
        if min(height, width) < 2:
            raise UserError(f"A wavelet transform needs images of at least 2×2 pixels, got {height}×{width}.")
        low = torch.tensor(LOW_PASS[wavelet], dtype=torch.float64)
        self.levels = max(1, min(levels, max_levels(min(height, width), low.numel())))
        self.domain_shape = self.range_shape = (height, width)
        self.domain_dtype = self.range_dtype = dtype
        self.blocks = []  # the approximation block's (rows, columns) that each level transforms
        rows, columns = height, width
        for level in range(self.levels):
            self.blocks.append((rows, columns))
            self.register_buffer(f"rows_{level}", analysis_matrix(rows, low).to(dtype))
            self.register_buffer(f"columns_{level}", analysis_matrix(columns, low).to(dtype))
            rows, columns = (rows + 1) // 2, (columns + 1) // 2

    def matrices(self, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"rows_{level}"), getattr(self, f"columns_{level}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_domain(x)
        coefficients = x.clone()
        for level, (rows, columns) in enumerate(self.blocks):
            row_matrix, column_matrix = self.matrices(level)
            block = coefficients[..., :rows, :columns]
            coefficients[..., :rows, :columns] = row_matrix @ block @ column_matrix.mT
        return coefficients

    def adjoint(self, coefficients: torch.Tensor) -> torch.Tensor:
        x = coefficients.clone()
        for level in reversed(range(self.levels)):
            rows, columns = self.blocks[level]
            row_matrix, column_matrix = self.matrices(level)
            block = x[..., :rows, :columns]
            x[..., :rows, :columns] = row_matrix.mT @ block @ column_matrix
        return x
