"""Optimal Eye Surgeon (Ghosh et al., ICML 2024): prune the random network at initialization, then fit.

Stage 1 (``mask_steps`` steps) keeps the randomly initialised weights θ₀ frozen and learns a
keep-probability p = sigmoid(ℓ) per parameter with the relaxed-Bernoulli (binary Gumbel-softmax) trick:

    min_ℓ ||A f_{m⊙θ₀}(z) − y||²/m + λ·KL(Ber(p) || Ber(p₀)),   m = sigmoid((ℓ + log u − log(1−u)) / τ)

with u ~ U(0, 1), τ = 0.2 and p₀ = the sparsity. The top-s fraction of the logits (ranked globally, as the
reference's ``make_mask_with_sparsity``) becomes a binary mask, the masked weights become m⊙θ₀, and stage 2
trains the surviving weights only: gradients are masked before, and the mask is re-applied after, every
optimizer step, so pruned weights stay exactly zero. ``prune='weights'`` (default) masks the convolution
kernels and keeps biases and BatchNorm parameters dense; ``prune='all'`` masks every parameter as the
reference code does, which with short stage-1 budgets prunes whole BatchNorm scales and kills channels
(``python -m experiments.reparam_methods`` compares the two; figures in docs/usage.md, "Methods").

One optimizer holds both parameter groups (network weights at ``lr``, logits at ``mask_lr``); in each
stage the other group has no gradient, so the optimizer skips it and there is exactly one
``optimizer.step()`` per training step. ``mask.pt`` in the run directory holds the mask and the masked
initial weights; ``method.mask=<path>`` starts a run from it at stage 2 (the paper's mask transfer).
Reference: github.com/Avra98/Optimal-Eye-Surgeon (dip_mask.py, train_sparse.py, src/utils/quant.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from untrained.errors import UserError, check_at_least, check_in_range, check_integer, check_positive
from untrained.methods.base import Method, StepOutput, penalty_scale
from untrained.outputs import replacing
from untrained.problem import InverseProblem

log = logging.getLogger(__name__)


def relaxed_bernoulli(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """A differentiable sample in (0, 1) of Ber(sigmoid(logits)): the two-class Gumbel-softmax."""
    u = torch.rand_like(logits).clamp(1e-20, 1 - 1e-7)
    return torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / temperature)


def bernoulli_kl(p: torch.Tensor, prior: float) -> torch.Tensor:
    """Σ KL(Ber(p) || Ber(prior)), with the reference's 1e-6 guard inside the logarithms."""
    return (p * torch.log((p + 1e-6) / prior) + (1 - p) * torch.log((1 - p + 1e-6) / (1 - prior))).sum()


def top_fraction_mask(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """A 0/1 mask keeping the ``int(fraction · n)`` largest entries of ``scores``."""
    mask = torch.zeros_like(scores)
    mask[torch.topk(scores, int(fraction * scores.numel())).indices] = 1.0
    return mask


class OptimalEyeSurgeon(Method):
    """OES for any network.

    Args:
        sparsity: fraction of parameters kept (s; also the prior keep-probability p₀).
        mask_steps: stage-1 steps (mask learning) before stage 2 (sparse training).
        mask_lr: Adam learning rate of the logits.
        kl_weight: λ of the KL term (summed over parameters; the data term is a mean).
        temperature: τ of the relaxed Bernoulli.
        prune: 'all' parameters (the reference code, which masks ``model.parameters()``) or 'weights'
            (convolution/linear kernels only; biases and normalisation parameters stay dense and trained).
        mask: path of a ``mask.pt`` from an earlier run: skip stage 1 and train that sparse network.
        **kwargs: the options of :class:`Method`; ``lr`` is the stage-2 learning rate.
    """

    name = "oes"
    capturable_step = False  # two stages with different parameters and losses

    def __init__(
        self,
        sparsity: float = 0.05,
        mask_steps: int = 60000,
        mask_lr: float = 1e-2,
        kl_weight: float = 1e-9,
        temperature: float = 0.2,
        mask: str | None = None,
        prune: str = "all",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_in_range("method.sparsity (the fraction of weights kept)", sparsity, 0, 1, low_open=True)
        check_integer("method.mask_steps", mask_steps, 0)  # more than trainer.max_steps: the run learns the mask only
        check_positive("method.mask_lr", mask_lr)
        check_at_least("method.kl_weight", kl_weight, 0)
        check_positive("method.temperature", temperature)
        self.sparsity, self.mask_steps, self.mask_lr = sparsity, mask_steps, mask_lr
        if prune not in ("all", "weights"):
            raise UserError(f"method.prune must be 'all' or 'weights', got '{prune}'.")
        self.kl_weight, self.temperature, self.mask_path = kl_weight, temperature, mask
        self.prune_all = prune == "all"

    # Setup -------------------------------------------------------------------------------------
    def setup(self, problem: InverseProblem, network: nn.Module) -> None:
        super().setup(problem, network)
        self.penalty_scale = penalty_scale(problem, "squared")  # of the KL weight (docs/weights.md)
        named = [(n, p) for n, p in network.named_parameters() if self.prune_all or p.dim() >= 2]
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        flat = torch.cat([p.detach().flatten() for _, p in named])
        self.register_buffer("initial_weights", flat.clone())  # θ₀, saved with the mask
        self.register_buffer("mask", torch.zeros_like(flat))
        self.pruned = False
        if self.mask_path is not None:
            self.load_mask(Path(self.mask_path), network)
        else:
            # Logits start at sigmoid⁻¹(1/2) = 0, as quant_initialization(q=2).
            self.logits = nn.Parameter(torch.zeros_like(flat))

    def load_mask(self, path: Path, network: nn.Module) -> None:
        if not path.is_file():
            raise UserError(f"OES mask file '{path}' not found: give the mask.pt of an earlier OES run.")
        saved = torch.load(path, map_location="cpu")
        if saved["names"] != self.names or [tuple(s) for s in saved["shapes"]] != [tuple(s) for s in self.shapes]:
            raise UserError(f"The OES mask '{path}' was learned for another network: use the same network settings.")
        self.initial_weights.copy_(saved["initial_weights"])
        self.mask.copy_(saved["mask"].float())
        self.apply_mask(network, weights=self.initial_weights)
        self.pruned = True

    # Parameters as one flat vector ---------------------------------------------------------------
    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        pieces = torch.split(flat, [math.prod(s) for s in self.shapes])
        return {name: piece.view(shape) for name, piece, shape in zip(self.names, pieces, self.shapes)}

    @torch.no_grad()
    def apply_mask(self, network: nn.Module, weights: torch.Tensor | None = None) -> None:
        """Set the network's parameters to ``mask ⊙ weights`` (default: ⊙ their current values)."""
        masks = self.unflatten(self.mask)
        sources = self.unflatten(weights) if weights is not None else None
        for name, p in network.named_parameters():
            if name in masks:
                p.copy_((sources[name] if sources is not None else p) * masks[name])

    @torch.no_grad()
    def prune(self, network: nn.Module) -> None:
        """End of stage 1: binary mask from the logits, network ← mask ⊙ θ₀."""
        self.mask.copy_(top_fraction_mask(self.logits.detach(), self.sparsity))
        self.apply_mask(network, weights=self.initial_weights)
        self.pruned = True
        kept = int(self.mask.sum())
        log.info("OES: kept %d of %d parameters (%.2f%%).", kept, self.mask.numel(), 100 * kept / self.mask.numel())

    # Optimization ------------------------------------------------------------------------------
    def parameter_groups(self, network: nn.Module) -> list[dict]:
        groups = super().parameter_groups(network)
        if not self.pruned:
            groups.append({"params": [self.logits], "lr": self.mask_lr})
        return groups

    def training_loss(self, network: nn.Module, problem: InverseProblem, step: int) -> StepOutput:
        if self.pruned:
            return super().training_loss(network, problem, step)
        keep = relaxed_bernoulli(self.logits, self.temperature)
        # Everything is frozen at θ₀ in stage 1; only the logits get gradients.
        weights = {name: p.detach() for name, p in network.named_parameters()}
        weights.update(self.unflatten(self.initial_weights * keep))
        output = functional_call(network, weights, (self.network_input(step),))
        data = problem.data_loss(output)
        kl = self.kl_weight * self.penalty_scale * bernoulli_kl(torch.sigmoid(self.logits), self.sparsity)
        return StepOutput(data + kl, output, {"data_loss": data.detach(), "kl": kl.detach()})

    def optimization_step(
        self, network: nn.Module, problem: InverseProblem, step: int, optimizer, backward: Callable
    ) -> StepOutput:
        if not self.pruned and step >= self.mask_steps:
            if self.mask.any():  # resumed from a checkpoint taken in stage 2: the weights are trained already
                self.pruned = True
            else:
                self.prune(network)
        optimizer.zero_grad(set_to_none=True)
        out = self.training_loss(network, problem, step)
        backward(out.loss)
        if self.pruned:
            masks = self.unflatten(self.mask)
            for name, p in network.named_parameters():
                if p.grad is not None and name in masks:
                    p.grad.mul_(masks[name])
        optimizer.step()
        if self.pruned:
            self.apply_mask(network)  # weight decay or momentum must not revive pruned weights
        return out

    # Outputs -----------------------------------------------------------------------------------
    def write_outputs(self, output_dir, problem: InverseProblem) -> None:
        mask = self.mask if self.pruned else top_fraction_mask(self.logits.detach(), self.sparsity)
        pruning = {
            "names": self.names,
            "shapes": [tuple(s) for s in self.shapes],
            "sparsity": self.sparsity,
            "mask": mask.bool().cpu(),
            "initial_weights": (self.initial_weights * mask).cpu(),
        }
        with replacing(Path(output_dir) / "mask.pt") as partial:
            torch.save(pruning, partial)
