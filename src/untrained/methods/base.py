"""Methods: the regularization strategy of an untrained-network reconstruction.

A method owns the network input ``z`` (how it is made and updated), the loss beyond the data term,
which parameters are optimized with which learning rates, and the per-step hooks. The
LightningModule calls, once per training step::

    out = method.optimization_step(network, problem, step, optimizer, backward)
    estimate = method.after_step(network, problem, step, out)

Subclasses usually override only ``regularizer`` (extra loss), ``network_input`` or
``parameter_groups``; ``optimization_step`` is there for methods with their own update rules.
Everything a method needs to resume (``z``, averages, masks) is a buffer or parameter, so it is in
the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from untrained.errors import UserError, check_at_least, check_in_range, check_integer, check_positive
from untrained.networks.base import MAX_CHANNELS, ImageNetwork, pad_to
from untrained.problem import InverseProblem

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "rprop": torch.optim.Rprop,
}


DATA_TERM_FORMS = ("squared", "root", "norm")


def penalty_scale(problem: InverseProblem, data_term: str = "squared") -> float:
    """The factor a penalty's λ is multiplied by so that λ means the same balance on every task (docs/weights.md).

    Penalties are per image entry (means over the N entries of the network-space image, or norms over them);
    the data term is written per image entry as ||A x − y||² / (N ||A||²) = c · data_loss
    (:meth:`InverseProblem.per_pixel_data_scale`). Dividing the loss by c keeps ``data_loss`` as it is:

    - 'squared': data_loss (mean |A x − y|² over the m measured entries) + λ/c · penalty;
    - 'root': sqrt(data_loss) or a mean |A x − y| + λ/√c · penalty (DRP's RMSE, L1 means);
    - 'norm': ||A x − y|| + λ ||A|| · ||penalty vector|| (unsquared norms, aSeqDIP's MRI/CT scripts).

    All three are 1 for denoising (A = I) and wherever ||A||² = m / N, so the references' values are kept there.
    """
    if data_term not in DATA_TERM_FORMS:
        raise ValueError(f"data_term must be one of {DATA_TERM_FORMS}, got {data_term!r}.")
    if data_term == "norm":
        return problem.operator_norm()
    c = problem.per_pixel_data_scale()
    return 1.0 / c if data_term == "squared" else c**-0.5


@dataclass
class StepOutput:
    loss: torch.Tensor
    output: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class InputSpec:
    """How the network input z is made.

    kind: 'noise' (DIP: uniform or normal noise times ``scale``), 'meshgrid' (2 channels of
    coordinates) or 'measurement' (the task's measurement-based reconstruction, e.g. noisy image,
    zero-filled MRI, FBP).
    """

    kind: str = "noise"
    channels: int = 32
    distribution: str = "uniform"
    scale: float = 0.1

    def __post_init__(self):
        if self.kind not in ("noise", "meshgrid", "measurement"):
            raise UserError(f"method.input.kind must be 'noise', 'meshgrid' or 'measurement', got '{self.kind}'.")
        if self.distribution not in ("uniform", "normal"):
            raise UserError(f"method.input.distribution must be 'uniform' or 'normal', got '{self.distribution}'.")
        check_integer("method.input.channels", self.channels, 1, MAX_CHANNELS)  # also where kind ignores them
        check_positive("method.input.scale", self.scale)


def make_input(spec: InputSpec, problem: InverseProblem, shape: tuple[int, ...]) -> torch.Tensor:
    """The initial z of shape (1, *shape); uses the global (seeded) torch RNG.

    ``shape`` is the network's input shape: for image-sized inputs the image's grid padded to the network's
    working grid (``networks/base.py``), to which a measurement-based z is reflection-padded."""
    if spec.kind == "measurement":
        if problem.init is None:
            raise UserError(
                f"Task '{problem.name}' has no measurement-based reconstruction to use as input: "
                "set method.input.kind=noise."
            )
        init = problem.init.detach()
        if init.shape[1] != shape[0] or any(n > t for n, t in zip(init.shape[2:], shape[1:])):
            raise UserError(
                f"method.input.kind=measurement makes z of the image's shape {tuple(init.shape[1:])}, but "
                f"the network takes inputs of shape {tuple(shape)}: use method.input.kind=noise."
            )
        return pad_to(init, shape[1:]).clone()
    if spec.kind == "meshgrid":
        axes = [torch.linspace(0, 1, n) for n in shape[1:]]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
        return grid[None, : shape[0]]
    sample = torch.rand if spec.distribution == "uniform" else torch.randn
    return sample((1, *shape)) * spec.scale


class Method(nn.Module):
    """Vanilla Deep Image Prior (Ulyanov et al. 2018) and the base of all methods.

    Args:
        lr: learning rate of the network weights.
        optimizer: 'adam', 'adamw', 'sgd', 'rmsprop' or 'rprop'.
        input: an :class:`InputSpec` as a dict.
        reg_noise_std: std of fresh Gaussian noise added to z at every step (DIP's input perturbation).
        exp_weight: weight of the exponential moving average of outputs reported as the estimate (0 = off).
        optimize_input: also optimize z (DIP's OPT_OVER='net,input').
        input_lr: learning rate of z when it is optimized (defaults to ``lr``).
    """

    name = "vanilla"
    # Whether one optimization step is the same GPU work every step (no host reads, no branching on the
    # step or on values, fixed learning rates), so the fast path may record it once as a CUDA graph.
    capturable_step = True

    def __init__(
        self,
        lr: float = 0.01,
        optimizer: str = "adam",
        input: dict | None = None,
        reg_noise_std: float = 0.0,
        exp_weight: float = 0.0,
        optimize_input: bool = False,
        input_lr: float | None = None,
        weight_decay: float = 0.0,
    ):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise UserError(f"Unknown method.optimizer '{optimizer}': choose one of {sorted(OPTIMIZERS)}.")
        check_in_range("method.exp_weight", exp_weight, 0, 1, high_open=True)
        check_positive("method.lr", lr)
        if input_lr is not None:
            check_positive("method.input_lr", input_lr)
        check_at_least("method.reg_noise_std", reg_noise_std, 0)
        check_at_least("method.weight_decay", weight_decay, 0)
        self.lr, self.optimizer_name, self.weight_decay = lr, optimizer, weight_decay
        self.input_spec = InputSpec(**(input or {}))
        self.reg_noise_std, self.exp_weight = reg_noise_std, exp_weight
        self.optimize_input, self.input_lr = optimize_input, input_lr if input_lr is not None else lr
        # Multiplies the method's penalty weights (docs/weights.md); set in ``setup`` by methods that have one.
        self.penalty_scale = 1.0

    # Input -------------------------------------------------------------------------------------
    def input_channels(self, problem: InverseProblem) -> int:
        if self.input_spec.kind == "measurement":
            return problem.image_shape[0]
        return 2 if self.input_spec.kind == "meshgrid" else self.input_spec.channels

    def setup(self, problem: InverseProblem, network: nn.Module) -> None:
        """Create z and the method's state once the problem and the network are known."""
        shape = (
            network.input_shape(problem.image_shape)
            if isinstance(network, ImageNetwork)
            else (self.input_channels(problem), *problem.image_shape[1:])
        )
        z = make_input(self.input_spec, problem, tuple(shape))
        if self.optimize_input:
            self.z = nn.Parameter(z)
        else:
            self.register_buffer("z", z)
        self.register_buffer("average", torch.zeros(1, *problem.image_shape))
        self.register_buffer("averaged_steps", torch.zeros((), dtype=torch.long))

    def require_image_shaped_input(self, problem: InverseProblem, reason: str) -> None:
        """For methods that compare z with the output: z must live in the image space (on the network's working
        grid, which holds the image's grid in its centre: compare the output with ``crop_to(z, ...)``)."""
        channels, *spatial = problem.image_shape
        if self.z.shape[1] != channels or any(n < m for n, m in zip(self.z.shape[2:], spatial)):
            raise UserError(
                f"{reason}, so z must have the image's shape {tuple(problem.image_shape)}: "
                "set method.input.kind=measurement."
            )

    def network_input(self, step: int) -> torch.Tensor:
        if self.reg_noise_std > 0 and self.training:
            return self.z + self.reg_noise_std * torch.randn_like(self.z)
        return self.z

    # Optimization ------------------------------------------------------------------------------
    def parameter_groups(self, network: nn.Module) -> list[dict]:
        groups = [{"params": [p for p in network.parameters() if p.requires_grad], "lr": self.lr}]
        if self.optimize_input:
            groups.append({"params": [self.z], "lr": self.input_lr})
        return groups

    def configure_optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        kwargs = {"weight_decay": self.weight_decay} if self.weight_decay else {}
        return OPTIMIZERS[self.optimizer_name](self.parameter_groups(network), lr=self.lr, **kwargs)

    def regularizer(self, output: torch.Tensor, problem: InverseProblem, step: int) -> dict[str, torch.Tensor]:
        """Named loss terms added to the data term (already weighted)."""
        return {}

    def training_loss(self, network: nn.Module, problem: InverseProblem, step: int) -> StepOutput:
        output = network(self.network_input(step))
        data = problem.data_loss(output)
        terms = self.regularizer(output, problem, step)
        loss = data + sum(terms.values()) if terms else data
        return StepOutput(loss, output, {"data_loss": data.detach(), **{k: v.detach() for k, v in terms.items()}})

    def optimization_step(
        self, network: nn.Module, problem: InverseProblem, step: int, optimizer, backward: Callable
    ) -> StepOutput:
        optimizer.zero_grad(set_to_none=True)
        out = self.training_loss(network, problem, step)
        backward(out.loss)
        optimizer.step()
        return out

    def write_outputs(self, output_dir, problem: InverseProblem) -> None:
        """Write method-specific files into the run directory (e.g. OES's mask); called after the run."""

    @torch.no_grad()
    def after_step(self, network: nn.Module, problem: InverseProblem, step: int, out: StepOutput) -> torch.Tensor:
        """Update the method's state after the optimizer step; return the current estimate."""
        output = out.output.detach()
        if self.exp_weight <= 0:
            return output
        # DIP's out_avg: a plain exponential average, started at the first output.
        weight = torch.where(self.averaged_steps > 0, self.exp_weight, 0.0)
        self.average.mul_(weight).add_(output * (1 - weight))
        self.averaged_steps += 1
        return self.average.clone()
