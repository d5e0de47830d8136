"""Pixel masking y = m ⊙ x (self-adjoint)."""

from __future__ import annotations

import torch

from untrained.errors import UserError
from untrained.operators.base import LinearOperator


class Mask(LinearOperator):
    def __init__(self, mask: torch.Tensor, image_shape: tuple[int, ...]):
        super().__init__()
        if mask.shape[-2:] != tuple(image_shape[-2:]) or mask.ndim != 3 or mask.shape[0] not in (1, image_shape[0]):
            raise UserError(
                f"The inpainting mask has shape {tuple(mask.shape)} but the image is {tuple(image_shape)}: "
                f"give a mask of the image's height and width."
            )
        self.register_buffer("mask", mask.float())
        self.domain_shape = self.range_shape = tuple(image_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_domain(x)
        return x * self.mask

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.mask
