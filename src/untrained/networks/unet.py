"""A configurable U-Net (Ronneberger et al. 2015), in the variants the DIP references use.

Layout, for ``depth`` levels below the input resolution (level 0 is the input's grid, level ``depth`` the
bottleneck):

    input block (level 0):  ``in_convs`` × [conv k → norm → act]                              → channels_down[0]
    down block (level l):   downsample ×2 (max/avg pooling, or the first conv with stride 2)
                            → 2 × [conv k → norm → act]       → channels_down[l] (channels_bottom at the bottom)
    up block (level l):     upsample ×2 the level below (bilinear/nearest [→ conv k], or a transposed conv)
                            ⊕ skip of level l's encoder features (concat: the features themselves;
                              project: conv 1×1 → norm → act to channels_skip[l]; none)
                            → [norm of the concatenation] → conv k (channels_up_mid[l]) → norm → act
                            → conv k (channels_up[l]) → norm → act
    head:                   conv 1×1 to the output channels [→ sigmoid]

The references, each a config in ``conf/network/`` citing its file and class: the ``MediumUNet`` and the shallow
``UNet`` of github.com/sjames40/Aseq_DIP and Self-Guided-DIP (``unet/``: max pooling, concatenated skips,
bilinear upsampling, BatchNorm, ReLU, every convolution initialised N(0, 0.02)), and the U-Net of EDIP
(educating-dip/educated_deep_image_prior) and dival's DIP-CT (strided convolutions, 1×1 projected skips of 4
channels, LeakyReLU, a norm over the concatenation; GroupNorm in EDIP, BatchNorm in dival). Works in 1D (signals)
and 2D (images); any image size through the working grid of ``networks/base.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from untrained.errors import UserError, check_choice, check_in_range, check_integer
from untrained.networks.base import MAX_CHANNELS, ImageNetwork, channels_per_level
from untrained.networks.skip import MAX_KERNEL_SIZE, ConvBlock, _channels_last_grad, activation, dropout_layers

NORMS = ("batch", "instance", "group", "none")
DOWNSAMPLING = ("maxpool", "avgpool", "stride")
UPSAMPLING = ("bilinear", "nearest", "transposed")
SKIPS = ("concat", "project", "none")
INITS = ("default", "normal")


def _norm(kind: str, dim: int, channels: int, groups: int) -> nn.Module | None:
    if kind == "batch":
        return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dim](channels)
    if kind == "instance":  # affine, so that it has weights to initialise and learn like BatchNorm's
        return {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d}[dim](channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(groups if channels % groups == 0 else 1, channels)
    return None


class _ConvNormAct(nn.Sequential):
    def __init__(
        self, dim, in_ch, out_ch, kernel_size, *, norm, groups, act, stride=1, bias=True, pad="zero", dropout=0.0
    ):
        layers: list[nn.Module] = [ConvBlock(dim, in_ch, out_ch, kernel_size, stride=stride, bias=bias, pad=pad)]
        normalisation = _norm(norm, dim, out_ch, groups)
        if normalisation is not None:
            layers.append(normalisation)
        layers.append(activation(act))
        super().__init__(*layers, *dropout_layers(dim, dropout))


class _Down(nn.Sequential):
    """Level l of the encoder: halve the grid, then two conv → norm → act."""

    def __init__(self, dim, in_ch, out_ch, *, downsample, layer):
        pools = {"maxpool": {1: nn.MaxPool1d, 2: nn.MaxPool2d}, "avgpool": {1: nn.AvgPool1d, 2: nn.AvgPool2d}}
        if downsample == "stride":
            super().__init__(layer(in_ch, out_ch, stride=2), layer(out_ch, out_ch))
        else:
            super().__init__(pools[downsample][dim](2, 2), layer(in_ch, out_ch), layer(out_ch, out_ch))


class _Up(nn.Module):
    """Level l of the decoder: upsample the level below, merge level l's skip, two conv → norm → act."""

    def __init__(
        self, dim, below_ch, skip_in_ch, skip, mid_ch, out_ch, *, upsample, upsample_conv, align_corners,
        merge_norm, zero_skip_channel, norm, groups, layer, project, conv_options,
    ):  # fmt: skip
        super().__init__()
        if upsample == "transposed":
            transposed = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d}[dim]
            self.up = transposed(below_ch, below_ch, kernel_size=2, stride=2)
        else:
            mode = "linear" if dim == 1 and upsample == "bilinear" else upsample
            corners = {"align_corners": align_corners} if mode != "nearest" else {}
            up: list[nn.Module] = [nn.Upsample(scale_factor=2, mode=mode, **corners)]
            if upsample_conv:  # DIP's models/unet.py: a convolution after the interpolation
                up.append(ConvBlock(dim, below_ch, below_ch, **conv_options))
            self.up = nn.Sequential(*up)
        # skip: the channels concatenated from level l's encoder (0: none)
        self.skip = project(skip_in_ch, skip) if skip > 0 and project is not None else None
        self.skip_channels = skip
        # EDIP/dival concatenate a zeroed channel where a level has no skip (reproduced for the norm's statistics)
        self.zero_channel = zero_skip_channel and skip == 0
        merged = below_ch + skip + int(self.zero_channel)
        self.merge_norm = _norm(norm, dim, merged, 1) if merge_norm else None
        self.conv = nn.Sequential(layer(merged, mid_ch), layer(mid_ch, out_ch))

    def forward(self, below: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        up = self.up(below)
        if self.skip_channels == 0:
            parts = [up, torch.zeros_like(up[:, :1])] if self.zero_channel else [up]
        else:
            skip = features if self.skip is None else self.skip(features)
            parts = [_channels_last_grad(skip), _channels_last_grad(up)]
        merged = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        if self.merge_norm is not None:
            merged = self.merge_norm(merged)
        return self.conv(merged)


class UNet(ImageNetwork):
    """An encoder-decoder of ``depth`` levels with skip connections; see the module docstring for the layout."""

    # bf16 autocast: see benchmarks/results/unet-cpu-fast-path-quality/fast_path_quality.md (set from that
    # measurement; the skip net's rule is in docs/performance.md).
    autocast_safe = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels_down: Sequence[int] | int = (64, 128, 256),
        channels_up: Sequence[int] | int = (64, 64, 128),
        channels_skip: Sequence[int] | int | None = None,
        channels_bottom: int | None = None,
        channels_up_mid: Sequence[int] | int | str | None = None,
        depth: int | None = None,
        skip: str = "concat",
        in_convs: int = 2,
        kernel_size: int = 3,
        downsample: str = "maxpool",
        upsample: str = "bilinear",
        upsample_conv: bool = False,
        align_corners: bool = True,
        norm: str = "batch",
        norm_groups: int = 2,
        norm_groups_down: int = 4,
        merge_norm: bool = False,
        zero_skip_channel: bool = False,
        act: str = "ReLU",
        pad: str = "zero",
        bias: bool = True,
        sigmoid: bool = False,
        init: str = "default",
        init_std: float = 0.02,
        dim: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        check_choice("network.dim (1: signals, 2: images)", dim, (1, 2))
        check_in_range("network.dropout", dropout, 0, 1, high_open=True)
        check_choice("network.skip", skip, SKIPS)
        check_choice("network.downsample", downsample, DOWNSAMPLING)
        check_choice("network.upsample", upsample, UPSAMPLING)
        check_choice("network.norm", norm, NORMS)
        check_choice("network.init", init, INITS)
        check_choice("network.pad", pad, ("zero", "reflection"))
        check_integer("network.in_convs", in_convs, 1, 8)
        check_integer("network.kernel_size", kernel_size, 1, MAX_KERNEL_SIZE)
        if kernel_size % 2 == 0:
            raise UserError(f"network.kernel_size must be odd (a convolution that keeps the size), got {kernel_size}.")
        check_integer("network.norm_groups", norm_groups, 1, MAX_CHANNELS)
        check_integer("network.norm_groups_down", norm_groups_down, 1, MAX_CHANNELS)
        check_in_range("network.init_std", init_std, 0, 10, low_open=True)
        activation(act)  # unknown names fail here, before any layer is built
        lists = (channels_down, channels_up, channels_skip, channels_up_mid)
        if depth is None:
            depth = next((len(c) for c in lists if isinstance(c, Sequence) and not isinstance(c, str)), 3)
        check_integer("network.depth", depth, 1, 10)
        down = channels_per_level(channels_down, depth, "channels_down", "depth")
        up = channels_per_level(channels_up, depth, "channels_up", "depth")
        # concat: None = a skip at every level, 0 = none at that level; project: the projection's channels
        if channels_skip is None:
            channels_skip = 4 if skip == "project" else 1
        skips = channels_per_level(
            channels_skip, depth, "channels_skip", "depth", minimum=0
        )  # 0: no skip at that level
        if channels_up_mid == "half":  # half the concatenated channels (Pytorch-UNet's bilinear Up, the references')
            mids = None
        else:
            mids = (
                up
                if channels_up_mid is None
                else channels_per_level(channels_up_mid, depth, "channels_up_mid", "depth")
            )
        bottom = down[-1] if channels_bottom is None else channels_bottom
        check_integer("network.channels_bottom", bottom, 1, MAX_CHANNELS)

        self.in_channels, self.out_channels, self.dim = in_channels, out_channels, dim
        self.downsampling_factor = 2**depth
        # BatchNorm and InstanceNorm need more than one value per channel at the coarsest scale (fit_to checks).
        self.normalises_coarsest_scale = norm in ("batch", "instance")
        # Reflection padding of the coarsest scale's convolutions needs more pixels than it pads.
        self.min_coarsest_size = (kernel_size - 1) // 2 + 1 if pad == "reflection" else 1

        def layer(in_ch, out_ch, stride=1, groups=norm_groups, size=kernel_size):
            return _ConvNormAct(
                dim,
                in_ch,
                out_ch,
                size,
                norm=norm,
                groups=groups,
                act=act,
                stride=stride,
                bias=bias,
                pad=pad,
                dropout=dropout,
            )

        def down_layer(in_ch, out_ch, stride=1):
            return layer(in_ch, out_ch, stride, groups=norm_groups_down)

        def project(in_ch, out_ch):  # a skip projected by a 1×1 conv → norm (one group: EDIP's LayerNorm) → act
            return _ConvNormAct(dim, in_ch, out_ch, 1, norm=norm, groups=1, act=act, bias=bias, pad=pad)

        widths = [*down, bottom]  # the encoder's channels at levels 0..depth
        self.inc = nn.Sequential(*(layer(in_channels if i == 0 else down[0], down[0]) for i in range(in_convs)))
        self.downs = nn.ModuleList(
            _Down(dim, widths[level - 1], widths[level], downsample=downsample, layer=down_layer)
            for level in range(1, depth + 1)
        )
        ups = []
        for level in reversed(range(depth)):  # coarsest first, as they run
            below = bottom if level == depth - 1 else up[level + 1]
            if skip == "none" or skips[level] == 0:
                skip_channels = 0
            else:
                skip_channels = widths[level] if skip == "concat" else skips[level]
            mid = mids[level] if mids is not None else max(1, (below + skip_channels) // 2)
            ups.append(
                _Up(
                    dim,
                    below,
                    widths[level],
                    skip_channels,
                    mid,
                    up[level],
                    upsample=upsample,
                    upsample_conv=upsample_conv,
                    align_corners=align_corners,
                    merge_norm=merge_norm and norm != "none",
                    zero_skip_channel=zero_skip_channel,
                    norm=norm,
                    groups=norm_groups,
                    layer=layer,
                    project=project if skip == "project" else None,
                    conv_options={"kernel_size": kernel_size, "bias": bias, "pad": pad},
                )  # fmt: skip
            )
        self.ups = nn.ModuleList(ups)
        head: list[nn.Module] = [ConvBlock(dim, up[0], out_channels, 1, bias=bias, pad=pad)]
        if sigmoid:
            head.append(nn.Sigmoid())
        self.head = nn.Sequential(*head)
        if init == "normal":
            initialise_normal(self, init_std)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        features = [self.inc(z)]
        for down in self.downs:
            features.append(down(features[-1]))
        x = features.pop()
        for up in self.ups:
            x = up(x, features.pop())
        return self.head(x)


def initialise_normal(network: nn.Module, std: float = 0.02) -> None:
    """The references' ``init_weights(net, 'normal', 0.02)`` (pix2pix's): every convolution's (and linear layer's)
    weight N(0, std), its bias 0; every normalisation's weight N(1, std), its bias 0. (The references match
    ``BatchNorm2d`` by class name; their U-Nets have no other normalisation, so any affine norm is treated so here.)"""
    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)
    for module in network.modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, norms) and module.weight is not None:
            nn.init.normal_(module.weight, 1.0, std)
            nn.init.zeros_(module.bias)
