"""The Deep Image Prior hourglass network with skip connections (Ulyanov et al. 2018, "skip").

Structure per scale i (outermost first), as in the paper's supplement and notebooks:

    input ─┬─ skip branch:   conv k_skip (c_skip[i]) → BN → act
           └─ deeper branch: conv k_down stride 2 (c_down[i]) → BN → act
                             → conv k_down (c_down[i]) → BN → act
                             → [scale i+1] → upsample ×2
    concat → BN → conv k_up (c_up[i]) → BN → act → [conv 1×1 (c_up[i]) → BN → act]

followed by a 1×1 conv to the output channels and an optional sigmoid. With ``dropout`` > 0 a channel dropout follows
every act of the down and up paths (not the skip branch or the output conv), as in Laves et al.'s Bayesian DIP.
Works in 1D (signals) and 2D (images). Any image size: the grid is padded to a multiple of 2^num_scales and the
output cropped back (``networks/base.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from untrained.errors import UserError, check_choice, check_in_range, check_integer
from untrained.networks.base import ImageNetwork, channels_per_level

MAX_KERNEL_SIZE = 31  # DIP uses 3 (and 1 for the skips)


def activation(name: str) -> nn.Module:
    activations = {
        "LeakyReLU": lambda: nn.LeakyReLU(0.2),
        "ReLU": nn.ReLU,
        "ELU": nn.ELU,
        "Swish": nn.SiLU,
        "none": nn.Identity,
    }
    if name not in activations:
        raise UserError(f"Unknown activation '{name}': choose one of {sorted(activations)}.")
    return activations[name]()


class ReflectionPad(nn.Module):
    """Reflection padding in the input's dtype. CPU autocast runs reflection padding in fp32, which cast every
    bf16 activation map to fp32 and back around each convolution; the padded values are the same either way."""

    def __init__(self, padding: int):
        super().__init__()
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.pad(x, [self.padding] * 2 * (x.ndim - 2), mode="reflect")


class ConvBlock(nn.Sequential):
    """Padding → convolution (→ pooling when downsampling without stride)."""

    def __init__(self, dim, in_ch, out_ch, kernel_size, stride=1, bias=True, pad="zero", downsample="stride"):
        conv_cls = {1: nn.Conv1d, 2: nn.Conv2d}[dim]
        layers: list[nn.Module] = []
        padding = (kernel_size - 1) // 2
        if pad == "reflection" and padding > 0:
            layers.append(ReflectionPad(padding))
            padding = 0
        elif pad not in ("zero", "reflection"):
            raise UserError(f"Unknown padding '{pad}': use 'zero' or 'reflection'.")
        conv_stride = stride if downsample == "stride" else 1
        layers.append(conv_cls(in_ch, out_ch, kernel_size, conv_stride, padding=padding, bias=bias))
        if stride > 1 and downsample != "stride":
            pools = {"avg": {1: nn.AvgPool1d, 2: nn.AvgPool2d}, "max": {1: nn.MaxPool1d, 2: nn.MaxPool2d}}
            if downsample not in pools:
                raise UserError(f"Unknown downsampling '{downsample}': use 'stride', 'avg' or 'max'.")
            layers.append(pools[downsample][dim](stride, stride))
        super().__init__(*layers)


def dropout_layers(dim: int, rate: float) -> list[nn.Module]:
    """Channel dropout at ``rate`` (MC dropout, docs/uncertainty.md); none at 0, so that a network without dropout
    has exactly the modules, parameter names and numbers it had before the option existed."""
    check_in_range("network.dropout", rate, 0, 1, high_open=True)
    return [{1: nn.Dropout1d, 2: nn.Dropout2d}[dim](rate)] if rate > 0 else []


def conv_bn_act(dim, in_ch, out_ch, kernel_size, act, norm=True, dropout=0.0, **conv_kwargs) -> list[nn.Module]:
    layers = [ConvBlock(dim, in_ch, out_ch, kernel_size, **conv_kwargs)]
    if norm:
        layers.append({1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dim](out_ch))
    layers.append(activation(act))
    return layers + dropout_layers(dim, dropout)


class _Scale(nn.Module):
    """One scale of the hourglass; ``inner`` is the next (coarser) scale or None at the bottom."""

    def __init__(
        self,
        dim,
        in_ch,
        down,
        up,
        skip,
        inner_out,
        inner,
        *,
        k_down,
        k_up,
        k_skip,
        act,
        norm,
        conv_kwargs,
        upsample_mode,
        downsample_mode,
        need1x1_up,
        dropout,
    ):
        super().__init__()
        bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dim]
        self.skip = (
            nn.Sequential(*conv_bn_act(dim, in_ch, skip, k_skip, act, norm, **conv_kwargs)) if skip > 0 else None
        )
        deeper = conv_bn_act(
            dim, in_ch, down, k_down, act, norm, dropout, stride=2, downsample=downsample_mode, **conv_kwargs
        )
        deeper += conv_bn_act(dim, down, down, k_down, act, norm, dropout, **conv_kwargs)
        if inner is not None:
            deeper.append(inner)
        mode = "linear" if dim == 1 and upsample_mode == "bilinear" else upsample_mode
        deeper.append(nn.Upsample(scale_factor=2, mode=mode))
        self.deeper = nn.Sequential(*deeper)
        merged = skip + (inner_out if inner is not None else down)
        post = [bn(merged)] if norm else []
        post += conv_bn_act(dim, merged, up, k_up, act, norm, dropout, **conv_kwargs)
        if need1x1_up:
            post += conv_bn_act(dim, up, up, 1, act, norm, dropout, **conv_kwargs)
        self.post = nn.Sequential(*post)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deep = self.deeper(x)
        if self.skip is None:
            return self.post(deep)
        return self.post(torch.cat([_channels_last_grad(self.skip(x)), _channels_last_grad(deep)], dim=1))


def _channels_last_grad(t: torch.Tensor) -> torch.Tensor:
    """Make the gradient ``torch.cat`` hands back to ``t`` dense channels-last when ``t`` is channels-last.

    That gradient is a channel slice of the concatenation's, which channels-last leaves strided; bilinear
    upsampling's backward then copies it to the NCHW layout and runs its slow NCHW kernel (see
    docs/performance.md, "Channels-last details"). In NCHW the slice is already contiguous and nothing is done;
    compiled code picks its own layouts.
    """
    if torch.compiler.is_compiling():
        return t
    if (
        t.requires_grad
        and t.dim() == 4
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
    ):
        t.register_hook(lambda grad: grad.contiguous(memory_format=torch.channels_last))
    return t


class SkipNet(ImageNetwork):
    """DIP's encoder-decoder with skip connections; see the module docstring for the layout."""

    # bf16 autocast keeps the best PSNR within the 0.1 dB target of fp32, so performance.autocast=auto may use it
    # (see docs/performance.md; benchmarks/results/cpu-fast-path-quality.md, gpu-fast-path-quality.md).
    autocast_safe = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels_down: Sequence[int] | int = (16, 32, 64, 128, 128),
        channels_up: Sequence[int] | int = (16, 32, 64, 128, 128),
        channels_skip: Sequence[int] | int = (4, 4, 4, 4, 4),
        num_scales: int | None = None,
        kernel_size_down: int = 3,
        kernel_size_up: int = 3,
        kernel_size_skip: int = 1,
        pad: str = "reflection",
        upsample_mode: str = "bilinear",
        downsample_mode: str = "stride",
        act: str = "LeakyReLU",
        batch_norm: bool = True,
        bias: bool = True,
        need1x1_up: bool = True,
        sigmoid: bool = True,
        dim: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        check_choice("network.dim (1: signals, 2: images)", dim, (1, 2))
        check_in_range("network.dropout", dropout, 0, 1, high_open=True)
        for name, size in (
            ("kernel_size_down", kernel_size_down),
            ("kernel_size_up", kernel_size_up),
            ("kernel_size_skip", kernel_size_skip),
        ):
            check_integer(f"network.{name}", size, 1, MAX_KERNEL_SIZE)
            if size % 2 == 0:
                raise UserError(f"network.{name} must be odd (a convolution that keeps the size), got {size}.")
        if num_scales is None:
            num_scales = next(
                (len(c) for c in (channels_down, channels_up, channels_skip) if isinstance(c, Sequence)), 5
            )
        down = channels_per_level(channels_down, num_scales, "channels_down", "num_scales")
        up = channels_per_level(channels_up, num_scales, "channels_up", "num_scales")
        skip = channels_per_level(
            channels_skip, num_scales, "channels_skip", "num_scales", minimum=0
        )  # 0: no skip connection
        self.in_channels, self.out_channels, self.dim = in_channels, out_channels, dim
        self.downsampling_factor = 2**num_scales
        self.normalises_coarsest_scale = batch_norm  # BatchNorm needs more than one pixel there (fit_to checks)
        # Reflection padding of the coarsest scale's convolution needs more pixels than it pads.
        self.min_coarsest_size = (kernel_size_down - 1) // 2 + 1 if pad == "reflection" else 1
        conv_kwargs = {"bias": bias, "pad": pad}
        inner: nn.Module | None = None
        for i in reversed(range(num_scales)):
            in_ch = in_channels if i == 0 else down[i - 1]
            inner = _Scale(
                dim,
                in_ch,
                down[i],
                up[i],
                skip[i],
                up[i + 1] if i + 1 < num_scales else None,
                inner,
                k_down=kernel_size_down,
                k_up=kernel_size_up,
                k_skip=kernel_size_skip,
                act=act,
                norm=batch_norm,
                conv_kwargs=conv_kwargs,
                upsample_mode=upsample_mode,
                downsample_mode=downsample_mode,
                need1x1_up=need1x1_up,
                dropout=dropout,
            )
        head = [ConvBlock(dim, up[0], out_channels, 1, bias=bias, pad=pad)]
        if sigmoid:
            head.append(nn.Sigmoid())
        self.body = inner
        self.head = nn.Sequential(*head)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z))
