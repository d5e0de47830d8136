"""The deep decoder (Heckel & Hand, ICLR 2019): an under-parameterised image generator without convolutions.

Each of the d blocks is a 1×1 convolution (no bias) → bilinear ×2 upsampling (not in the last block)
→ ReLU → channel normalization (BatchNorm with affine parameters); a 1×1 convolution (no bias) to the
output channels and a sigmoid follow. The fixed input z has k channels and 1/2^(d−1) of the image's
size (rounded up; the output is cropped back to the image, networks/base.py). With k = 128, d = 6 and
3 outputs it has 6·(128² + 2·128) + 128·3 = 100,224 parameters, as
``decodernw(num_channels_up=[128]*5)`` of the reference code (github.com/reinhardh/supplement_deep_decoder,
include/decoder.py, whose channel list is padded by two entries: five given → six blocks).
"""

from __future__ import annotations

import torch
from torch import nn

from untrained.errors import check_choice, check_in_range, check_integer
from untrained.networks.base import MAX_CHANNELS, ImageNetwork
from untrained.networks.skip import activation, dropout_layers

MAX_BLOCKS = 14  # z is 2^(d−1) times smaller than the image: 2^13 = 8192 pixels per side at most


class DeepDecoder(ImageNetwork):
    """Deep decoder with ``blocks`` blocks of ``channels`` channels.

    Args:
        in_channels: channels of z (the reference uses ``channels``; other values only change the first layer).
        out_channels: image channels.
        channels: k, the width of every block.
        blocks: d, the number of blocks; the image is 2^(d−1) times larger than z.
        upsample_mode: 'bilinear' (paper) or 'nearest'.
        act: activation (ReLU in the paper).
        bn_affine: learn the channel normalization's scale and shift (the paper's default).
        sigmoid: end with a sigmoid (images in [0, 1]).
        dropout: channel dropout after each block's norm (MC dropout; 0: none, docs/uncertainty.md).
    """

    # Not for performance.autocast=auto: bf16 moves the best PSNR by more than the 0.1 dB target and more than
    # fp32's own spread with the order of its sums, which channels-last stays inside (see docs/performance.md;
    # benchmarks/results/cpu-fast-path-quality.md).
    autocast_safe = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int = 128,
        blocks: int = 6,
        upsample_mode: str = "bilinear",
        act: str = "ReLU",
        bn_affine: bool = True,
        sigmoid: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        check_integer("network.channels", channels, 1, MAX_CHANNELS)
        check_in_range("network.dropout", dropout, 0, 1, high_open=True)
        check_integer("network.blocks", blocks, 1, MAX_BLOCKS)
        check_choice("network.upsample_mode", upsample_mode, ("bilinear", "nearest"))
        self.in_channels, self.out_channels, self.dim = in_channels, out_channels, 2
        self.downsampling_factor = 2 ** (blocks - 1)
        layers: list[nn.Module] = []
        for block in range(blocks):
            layers.append(nn.Conv2d(in_channels if block == 0 else channels, channels, 1, bias=False))
            if block < blocks - 1:
                layers.append(nn.Upsample(scale_factor=2, mode=upsample_mode))
            layers += [activation(act), nn.BatchNorm2d(channels, affine=bn_affine), *dropout_layers(2, dropout)]
        layers.append(nn.Conv2d(channels, out_channels, 1, bias=False))
        if sigmoid:
            layers.append(nn.Sigmoid())
        self.body = nn.Sequential(*layers)

    def input_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of z (without the batch axis) for an image of shape (C, H, W): the working grid (H, W rounded
        up to multiples of 2^(d−1), networks/base.py) divided by 2^(d−1)."""
        return (self.in_channels, *(n // self.downsampling_factor for n in self.working_shape(image_shape[1:])))

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)
