"""Double over-parameterization (You, Zhu, Qu & Ma, NeurIPS 2020): robust recovery from sparse corruption.

The measurement is modelled as y ≈ A f_θ(z) + s with the sparse corruption over-parameterised as
s = g⊙g − h⊙h, and all of θ, g, h are fitted to the plain data term

    min_{θ, g, h} mean |A f_θ(z) + g⊙g − h⊙h − y|²

with g, h started at N(0, 1)·1e-5 and discrepant step sizes: SGD with lr 1 for θ and 500 for g, h in the
reference (github.com/ChongYou/robust-image-recovery, denoising.py). The ratio of the two learning rates
is the implicit regulariser: small initialisation and a large ratio bias (g, h) towards sparse s, so the
network fits the image and s absorbs the outliers (e.g. salt-and-pepper pixels) without an explicit ℓ1
term. The recovered corruption is saved in the run directory (``corruption.npy``, and ``corruption.png``
mapped to [0, 1] with grey = 0 when it is image-shaped).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from untrained.errors import UserError, check_positive
from untrained.methods.base import Method, StepOutput
from untrained.operators.base import mean_squared_magnitude
from untrained.outputs import save_npy, save_png
from untrained.problem import InverseProblem


class DoubleOverParameterization(Method):
    """DIP with a Hadamard-product model of sparse measurement corruption.

    Args:
        corruption_lr: learning rate of g and h (the reference's lr_c = 500 against lr = 1 for θ).
        corruption_init: scale of the N(0, 1) initialisation of g and h.
        loss: 'l2' (mean squared, the reference's default) or 'l1' (mean absolute, its --l1 option).
        **kwargs: the options of :class:`Method` (lr of θ, optimizer, input, reg_noise_std, ...).
    """

    name = "dop"

    def __init__(self, corruption_lr: float = 500.0, corruption_init: float = 1e-5, loss: str = "l2", **kwargs):
        super().__init__(**kwargs)
        check_positive("method.corruption_lr", corruption_lr)
        check_positive("method.corruption_init", corruption_init)  # g = h = 0 is a saddle: they would never move
        if loss not in ("l2", "l1"):
            raise UserError(f"method.loss must be 'l2' or 'l1', got '{loss}'.")
        self.corruption_lr, self.corruption_init, self.loss = corruption_lr, corruption_init, loss

    def setup(self, problem: InverseProblem, network: nn.Module) -> None:
        super().setup(problem, network)
        # Complex measurements get independent real and imaginary corruptions.
        self.complex_measurement = problem.y.is_complex()
        shape = torch.view_as_real(problem.y).shape if self.complex_measurement else problem.y.shape
        self.g = nn.Parameter(torch.randn(shape) * self.corruption_init)
        self.h = nn.Parameter(torch.randn(shape) * self.corruption_init)

    def corruption(self) -> torch.Tensor:
        """s = g⊙g − h⊙h, in the measurement space."""
        s = self.g**2 - self.h**2
        return torch.view_as_complex(s) if self.complex_measurement else s

    def parameter_groups(self, network: nn.Module) -> list[dict]:
        return super().parameter_groups(network) + [
            {"params": [self.g, self.h], "lr": self.corruption_lr, "weight_decay": 0.0}
        ]

    def training_loss(self, network: nn.Module, problem: InverseProblem, step: int) -> StepOutput:
        output = network(self.network_input(step))
        residual = problem.forward_model(output) + self.corruption() - problem.y
        loss = residual.abs().mean() if self.loss == "l1" else mean_squared_magnitude(residual)
        return StepOutput(loss, output, {"data_loss": problem.data_loss(output.detach())})

    def write_outputs(self, output_dir, problem: InverseProblem) -> None:
        corruption = self.corruption().detach()
        save_npy(Path(output_dir) / "corruption.npy", corruption.cpu().numpy()[0])
        if not corruption.is_complex() and tuple(corruption.shape[1:]) == tuple(problem.image_shape):
            save_png((corruption + 1) / 2, Path(output_dir) / "corruption.png")
