"""Self-Guided DIP (Liang et al. 2024; reference: github.com/sjames40/Self-Guided-DIP).

Both the weights θ and the input z are optimised. The reconstruction is the average of the network
over K random perturbations of its input, x̄ = (1/K) Σ_k f_θ(z + η_k), and the loss is

    ||A x̄ − y|| + λ ||x̄ − z||,

(L1 or squared L2, as configured; the MRI notebook uses L1 for both). The second term asks the
network to *denoise* its perturbed input back to z, which keeps z and x̄ together and regularises
without any training data. The K perturbed inputs go through the network as one batch.
"""

from __future__ import annotations

import torch
from torch import nn

from untrained.errors import UserError, check_at_least, check_choice, check_integer
from untrained.methods.base import Method, StepOutput, penalty_scale
from untrained.networks.base import crop_to
from untrained.problem import InverseProblem

NORMS = ("l1", "l2")
MAX_PERTURBATIONS = 1024  # K copies of the input go through the network as one batch
PERTURBATIONS = ("normal", "uniform")


def misfit(difference: torch.Tensor, norm: str) -> torch.Tensor:
    """Mean |d| (l1, as ``nn.L1Loss``) or mean |d|² (l2, as ``nn.MSELoss``); complex entries use moduli."""
    magnitude = difference.abs()
    return magnitude.mean() if norm == "l1" else (magnitude**2).mean()


class SelfGuidedDIP(Method):
    """Self-Guided DIP.

    Args:
        num_perturbations: K, input perturbations averaged per step (one batched forward pass).
        perturbation_std: σ_η; 'normal' draws N(0, σ_η²), 'uniform' draws U(−σ_η, σ_η).
        perturbation: 'normal' or 'uniform'.
        guidance_weight: λ of the self-guidance term ||x̄ − z||, per image entry (docs/weights.md).
        norm: 'l1' or 'l2' for both terms.
        **kwargs: the options of :class:`Method`: ``lr`` (θ) and ``input_lr`` (z); ``optimize_input`` is always on.
    """

    name = "self_guided"

    def __init__(
        self,
        num_perturbations: int = 4,
        perturbation_std: float = 0.05,
        perturbation: str = "normal",
        guidance_weight: float = 0.1,
        norm: str = "l2",
        **kwargs,
    ):
        if kwargs.get("optimize_input") is False:
            raise UserError("Self-Guided DIP always optimises its input: remove method.optimize_input=false.")
        super().__init__(**{**kwargs, "optimize_input": True})
        check_integer("method.num_perturbations", num_perturbations, 1, MAX_PERTURBATIONS)
        check_at_least("method.perturbation_std", perturbation_std, 0)
        check_choice("method.perturbation", perturbation, PERTURBATIONS)
        check_choice("method.norm", norm, NORMS)
        check_at_least("method.guidance_weight", guidance_weight, 0)
        self.num_perturbations, self.perturbation_std = num_perturbations, perturbation_std
        self.perturbation = perturbation
        self.guidance_weight, self.norm = guidance_weight, norm

    def setup(self, problem: InverseProblem, network: nn.Module) -> None:
        super().setup(problem, network)
        self.require_image_shaped_input(problem, "Self-guidance compares the output with z")
        self.penalty_scale = penalty_scale(problem, "squared" if self.norm == "l2" else "root")

    def perturbations(self) -> torch.Tensor:
        shape = (self.num_perturbations, *self.z.shape[1:])
        if self.perturbation == "normal":
            return torch.randn(shape, device=self.z.device) * self.perturbation_std
        return (torch.rand(shape, device=self.z.device) * 2 - 1) * self.perturbation_std

    def average_output(self, network: nn.Module) -> torch.Tensor:
        """x̄ = mean_k f_θ(z + η_k), shape (1, *image_shape)."""
        outputs = network(self.z + self.perturbations())
        return outputs.mean(dim=0, keepdim=True)

    def training_loss(self, network: nn.Module, problem: InverseProblem, step: int) -> StepOutput:
        average = self.average_output(network)
        data = misfit(problem.residual(average), self.norm)
        # z is on the network's working grid: its centre is the image's (the whole of it for most sizes).
        guidance = misfit(average - crop_to(self.z, average.shape[2:]), self.norm)
        loss = data + self.guidance_weight * self.penalty_scale * guidance
        return StepOutput(loss, average, {"data_loss": data.detach(), "self_guidance": guidance.detach()})
