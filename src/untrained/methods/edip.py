"""Educated DIP (Barbano et al., "An Educated Warm Start for Deep Image Prior-based Micro CT Reconstruction").

Stage 1, ``method=edip_pretrain``: supervised training of the very network DIP will use, on synthetic pairs
(random-ellipse phantom x → measurement with the task's operator and noise → approximate inverse, FBP for CT
or Aᴴy elsewhere), minimising ||f_θ(approximate inverse) − x||². The run writes the network's state_dict to
``edip_pretrained.pt`` in its directory. Stage 2, ``method=edip``: TV-DIP on the real measurement, starting
from those weights (``method.checkpoint=<stage-1 run dir>/edip_pretrained.pt``), input = FBP or noise.
Reference: github.com/educating-dip/educated_deep_image_prior (src/cfgs/trn/trainer.yaml, mdl/model_white.yaml).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from untrained.errors import UserError, check_at_least, check_in_range, check_integer, check_positive
from untrained.methods.base import Method, StepOutput
from untrained.methods.tv import TVDIP
from untrained.networks.base import crop_to, pad_to
from untrained.operators.generators.phantoms import random_ellipses, simulate_sinogram
from untrained.outputs import replacing
from untrained.problem import InverseProblem

CHECKPOINT_NAME = "edip_pretrained.pt"
MAX_BATCH_SIZE = 1024  # synthetic pairs per step (the reference: 32)
MAX_ELLIPSES = 1000  # per phantom (default 12)


class EDIPPretrain(Method):
    """Stage 1: fit f_θ(approximate inverse of A x) ≈ x on fresh random-ellipse phantoms x.

    Args:
        batch_size: synthetic pairs drawn per step.
        ellipses: ellipses per phantom.
        photons: incident photons per ray of the synthetic CT sinograms (null: the task's ``photons``).
        gaussian_std: Gaussian noise std of the synthetic measurements, as a fraction of max |Ax|.
        fbp_filter, fbp_frequency_scaling: the FBP that makes the network input (CT).
        **kwargs: the options of :class:`Method` (lr, weight_decay, ...); the input is always the measurement.
    """

    name = "edip_pretrain"
    capturable_step = False  # each step draws new synthetic training pairs

    def __init__(
        self,
        batch_size: int = 4,
        ellipses: int = 12,
        photons: float | None = None,
        gaussian_std: float = 0.0,
        fbp_filter: str = "Hann",
        fbp_frequency_scaling: float = 1.0,
        **kwargs,
    ):
        kwargs["input"] = {**(kwargs.get("input") or {}), "kind": "measurement"}
        super().__init__(**kwargs)
        check_integer("method.batch_size", batch_size, 1, MAX_BATCH_SIZE)
        check_integer("method.ellipses", ellipses, 1, MAX_ELLIPSES)
        if photons is not None:
            check_positive("method.photons (or null: the task's)", photons)
        check_at_least("method.gaussian_std", gaussian_std, 0)
        check_in_range("method.fbp_frequency_scaling", fbp_frequency_scaling, 0, 1, low_open=True)
        self.batch_size, self.ellipses = batch_size, ellipses
        self.photons, self.gaussian_std = photons, gaussian_std
        self.fbp_filter, self.fbp_frequency_scaling = fbp_filter, fbp_frequency_scaling
        self.trained: tuple[nn.Module, ...] = ()  # the network, held outside the module tree for write_outputs

    def setup(self, problem: InverseProblem, network: nn.Module) -> None:
        super().setup(problem, network)
        self.trained = (network,)
        self.photons = self.photons if self.photons is not None else problem.info.get("photons")
        # Seeds of the synthetic phantoms: drawn from the seeded global RNG, stored so that a resume continues.
        self.register_buffer("pairs_drawn", torch.zeros((), dtype=torch.long))
        self.register_buffer("phantom_seed", torch.randint(0, 2**31 - 1, ()))

    @torch.no_grad()
    def synthetic_pair(self, problem: InverseProblem, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(network input, target) for one random-ellipse phantom, both (1, *image_shape)."""
        grid = problem.image_shape[1:]
        target = torch.zeros(1, *problem.image_shape)  # ellipses in the first channel (MRI: the real part)
        target[0, 0] = crop_to(torch.from_numpy(random_ellipses(max(grid), seed, self.ellipses)), grid)
        target = target.to(problem.y.device)
        operator = problem.operator
        if hasattr(operator, "fbp"):
            y = simulate_sinogram(operator, target, self.photons, self.gaussian_std, seed)
            inverse = operator.fbp(y, self.fbp_filter, self.fbp_frequency_scaling).clamp(0, 1)
        else:
            y = operator(problem.to_domain(target))
            if self.gaussian_std > 0:
                generator = torch.Generator().manual_seed(seed)
                y = y + self.gaussian_std * y.abs().max() * torch.randn(y.shape, generator=generator).to(y)
            inverse = problem.from_domain(operator.adjoint(y))
        return inverse, target

    def optimization_step(
        self, network: nn.Module, problem: InverseProblem, step: int, optimizer, backward: Callable
    ) -> StepOutput:
        seeds = [int(self.phantom_seed) + int(self.pairs_drawn) + i for i in range(self.batch_size)]
        self.pairs_drawn += self.batch_size
        inputs, targets = zip(*(self.synthetic_pair(problem, s) for s in seeds))
        optimizer.zero_grad(set_to_none=True)
        # Padded to the network's working grid as z is (networks/base.py); the output comes back cropped.
        loss = (network(pad_to(torch.cat(inputs), self.z.shape[2:])) - torch.cat(targets)).pow(2).mean()
        backward(loss)
        optimizer.step()
        with torch.no_grad():  # the estimate the run tracks: the pre-trained network on the real measurement
            output = network(self.z)
        return StepOutput(loss, output, {"supervised_loss": loss.detach()})

    def write_outputs(self, output_dir, problem: InverseProblem) -> None:
        with replacing(Path(output_dir) / CHECKPOINT_NAME) as partial:
            torch.save({k: v.cpu() for k, v in self.trained[0].state_dict().items()}, partial)


class EducatedDIP(TVDIP):
    """Stage 2: TV-DIP fine-tuning from the stage-1 weights.

    Args:
        checkpoint: path of stage 1's ``edip_pretrained.pt`` (or its run directory).
        **kwargs: the options of :class:`TVDIP` (tv_weight, lr, input: measurement = FBP, or noise with
            ``channels: 1`` to match the pre-trained first layer).
    """

    name = "edip"

    def __init__(self, checkpoint: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if not checkpoint:
            raise UserError(
                "method=edip needs the stage-1 weights: run method=edip_pretrain first and set "
                f"method.checkpoint=<its run dir>/{CHECKPOINT_NAME}."
            )
        path = Path(checkpoint).expanduser()
        self.checkpoint = path / CHECKPOINT_NAME if path.is_dir() else path
        if not self.checkpoint.is_file():
            raise UserError(
                f"EDIP checkpoint '{self.checkpoint}' does not exist: set method.checkpoint to the "
                f"{CHECKPOINT_NAME} of an edip_pretrain run."
            )

    def setup(self, problem: InverseProblem, network: nn.Module) -> None:
        super().setup(problem, network)
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
            raise UserError(
                f"The EDIP checkpoint '{self.checkpoint}' was trained for another network or input "
                f"({first}): use the same network settings and input channels as stage 1."
            ) from None
