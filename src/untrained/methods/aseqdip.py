"""Autoencoding Sequential DIP (aSeqDIP, Alkhouri et al. 2024; reference: github.com/sjames40/Aseq_DIP).

The network input starts as the measurement-based reconstruction (noisy image, zero-filled MRI,
FBP) and is replaced by the network's own output after every block of ``inner_steps`` Adam steps on

    ||A f_θ(z) − y||² + λ ||f_θ(z) − z||²,

so the input drifts towards the image while the autoencoding term keeps f_θ close to the identity
on it, which is what makes the method resistant to fitting the noise. The same network (and the same
optimizer state) is used throughout. Lightning counts every inner step as a training step, so the
input update happens in ``after_step`` at the end of each block.

As in the reference scripts the new input is the output of the block's last inner step, computed
before that step's update (no extra forward pass). For operators with a sampling ``mask`` (MRI) the
reference first restores the measured k-space samples; here that is ``x + A^H (y − A x)``, equal to
replacing the sampled k-space entries by y whenever A A^H is the identity on the range (masked,
unitary FFT with normalised coil maps).
"""

from __future__ import annotations

import torch
from torch import nn

from untrained.errors import UserError, check_at_least, check_choice, check_integer
from untrained.methods.base import Method, StepOutput, penalty_scale
from untrained.networks.base import crop_to, pad_to
from untrained.operators.base import euclidean_norm, mean_squared_magnitude
from untrained.problem import InverseProblem

LOSS_FORMS = ("mse", "norm")
DATA_CONSISTENCY = ("auto", "always", "never")


def data_consistency(problem: InverseProblem, x: torch.Tensor) -> torch.Tensor:
    """x + A^H (y − A x) in the operator's domain: measured samples restored, the rest kept."""
    image = problem.to_domain(x)
    corrected = image + problem.operator.adjoint(problem.y - problem.operator(image))
    return problem.from_domain(corrected)


class ASeqDIP(Method):
    """aSeqDIP: blocks of ``inner_steps`` optimizer steps, then z ← f_θ(z).

    Args:
        inner_steps: N, optimizer steps per block (the reference: 2 for denoising, 10 for MRI/CT).
        ae_weight: λ of the autoencoding term ||f_θ(z) − z|| (1 in all reference scripts), per image entry
            (docs/weights.md).
        loss: 'mse' (means of squares, the denoising script) or 'norm' (unsquared norms, MRI/CT scripts).
        data_consistency: 'auto' (when the operator has a sampling ``mask``), 'always' or 'never'.
        **kwargs: the options of :class:`Method`; ``input.kind`` must be 'measurement'.
    """

    name = "aseqdip"

    def __init__(
        self, inner_steps: int = 2, ae_weight: float = 1.0, loss: str = "mse", data_consistency: str = "auto", **kwargs
    ):
        super().__init__(**kwargs)
        check_integer("method.inner_steps", inner_steps, 1)  # more than trainer.max_steps: z is never replaced
        check_at_least("method.ae_weight", ae_weight, 0)
        check_choice("method.loss", loss, LOSS_FORMS)
        check_choice("method.data_consistency", data_consistency, DATA_CONSISTENCY)
        if self.optimize_input:
            raise UserError("aSeqDIP sets its input from the network output: set method.optimize_input=false.")
        self.inner_steps, self.ae_weight, self.loss_form = inner_steps, ae_weight, loss
        self.data_consistency_mode = data_consistency
        self.use_data_consistency = False

    def setup(self, problem: InverseProblem, network: nn.Module) -> None:
        super().setup(problem, network)
        self.require_image_shaped_input(problem, "aSeqDIP feeds its output back as input")
        has_mask = hasattr(problem.operator, "mask") and problem.operator.linear
        if self.data_consistency_mode == "always" and not problem.operator.linear:
            raise UserError("method.data_consistency=always needs a linear operator with an adjoint.")
        mode = self.data_consistency_mode
        self.use_data_consistency = mode == "always" or (mode == "auto" and has_mask)
        self.penalty_scale = penalty_scale(problem, "squared" if self.loss_form == "mse" else "norm")

    def training_loss(self, network: nn.Module, problem: InverseProblem, step: int) -> StepOutput:
        z = self.network_input(step)
        output = network(z)
        # z is on the network's working grid, the image's grid padded (networks/base.py): compare on the image's.
        previous = crop_to(self.z, output.shape[2:])
        if self.loss_form == "mse":
            data, autoencoding = problem.data_loss(output), mean_squared_magnitude(output - previous)
        else:  # unsquared norms, as torch.linalg.norm in the reference's MRI and CT scripts
            data, autoencoding = euclidean_norm(problem.residual(output)), euclidean_norm(output - previous)
        loss = data + self.ae_weight * self.penalty_scale * autoencoding
        return StepOutput(loss, output, {"data_loss": data.detach(), "autoencoding": autoencoding.detach()})

    def is_block_end(self, step: int) -> bool:
        return (step + 1) % self.inner_steps == 0

    @torch.no_grad()
    def after_step(self, network: nn.Module, problem: InverseProblem, step: int, out: StepOutput) -> torch.Tensor:
        estimate = super().after_step(network, problem, step, out)
        if self.is_block_end(step):
            new_input = out.output.detach()
            if self.use_data_consistency:
                new_input = data_consistency(problem, new_input)
            self.z.copy_(pad_to(new_input, self.z.shape[2:]))  # reflection-padded, as the first input
        return estimate
