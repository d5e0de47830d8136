"""Deep Random Projector (Li, Wang, Zhuang & Sun, CVPR 2023): DIP with frozen random convolutions.

A shallow skip network (one scale by default, ``network=drp``) keeps every convolution's weights and
biases at their random initialization; only the BatchNorm affine parameters, an extra BatchNorm applied
to the input, and the input z itself are optimised, all with one Adam learning rate. The loss is
sqrt(mean |A f(BN(z)) − y|²) + λ·TV(f(BN(z))), TV anisotropic and averaged per entry (the reference's
``tv1_loss``). Fewer, cheaper parameters make each step fast and the early-stopping window wide.
Reference: github.com/sun-umn/Deep-Random-Projector (1_Denoising/train_denoising.py, Main_Start.py).
"""

from __future__ import annotations

import torch
from torch import nn

from untrained.errors import UserError, check_at_least, check_choice
from untrained.methods.base import Method, StepOutput, penalty_scale
from untrained.problem import InverseProblem
from untrained.regularizers import TV_KINDS, total_variation

BATCH_NORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


def freeze_convolutions(network: nn.Module) -> int:
    """Stop gradients to every convolution's weight and bias; return how many parameters were frozen."""
    frozen = 0
    for module in network.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            for p in module.parameters():
                p.requires_grad_(False)
                frozen += p.numel()
    return frozen


class DeepRandomProjector(Method):
    """DRP for any network with BatchNorm layers (the skip net of ``network=drp`` by default).

    Args:
        tv_weight: λ of the per-entry TV term (reference denoising: 0.45), per image entry (docs/weights.md).
        tv_kind: 'anisotropic' (reference) or 'isotropic'.
        data_loss: 'rmse' (the reference's sqrt of the mean squared error) or 'mse'.
        **kwargs: the options of :class:`Method`; ``lr`` is used for the BatchNorms and, with
            ``optimize_input``, for z (``input_lr``).
    """

    name = "drp"

    def __init__(self, tv_weight: float = 0.45, tv_kind: str = "anisotropic", data_loss: str = "rmse", **kwargs):
        super().__init__(**kwargs)
        check_at_least("method.tv_weight", tv_weight, 0)
        check_choice("method.tv_kind", tv_kind, TV_KINDS)
        if data_loss not in ("rmse", "mse"):
            raise UserError(f"method.data_loss must be 'rmse' or 'mse', got '{data_loss}'.")
        self.tv_weight, self.tv_kind, self.data_loss = tv_weight, tv_kind, data_loss

    def setup(self, problem: InverseProblem, network: nn.Module) -> None:
        super().setup(problem, network)
        if freeze_convolutions(network) == 0:
            raise UserError("method=drp freezes the network's convolutions, but it has none: use network=drp.")
        if not any(p.requires_grad for p in network.parameters()):
            raise UserError("method=drp trains the network's BatchNorm layers, but it has none: use network=drp.")
        self.input_norm = BATCH_NORMS[self.z.dim() - 2](self.z.shape[1])
        self.penalty_scale = penalty_scale(problem, "root" if self.data_loss == "rmse" else "squared")

    def network_input(self, step: int) -> torch.Tensor:
        return self.input_norm(super().network_input(step))

    def parameter_groups(self, network: nn.Module) -> list[dict]:
        groups = super().parameter_groups(network)
        groups[0]["params"] += list(self.input_norm.parameters())
        return groups

    def training_loss(self, network: nn.Module, problem: InverseProblem, step: int) -> StepOutput:
        output = network(self.network_input(step))
        data = problem.data_loss(output)
        fit = data.sqrt() if self.data_loss == "rmse" else data
        tv = self.tv_weight * self.penalty_scale * total_variation(output, self.tv_kind, reduction="mean")
        return StepOutput(fit + tv, output, {"data_loss": data.detach(), "tv": tv.detach()})
