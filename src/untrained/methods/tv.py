"""TV-DIP (Liu et al. 2019; Baguer et al. 2020).

TV-DIP minimises ``data(f_θ(z)) + λ·TV(f_θ(z))``, both per image entry (docs/weights.md): the network's
implicit prior plus an explicit edge-preserving one, which slows down (but does not remove) the fitting of
noise. The penalty itself,
:func:`untrained.regularizers.total_variation`, sits below methods and networks, which both use it.
"""

from __future__ import annotations

import torch

from untrained.errors import check_at_least, check_choice, check_positive
from untrained.methods.base import Method, penalty_scale
from untrained.problem import InverseProblem
from untrained.regularizers import TV_KINDS, total_variation


class TVDIP(Method):
    """DIP with an explicit total-variation penalty on the output.

    Args:
        tv_weight: λ in ``||A x − y||² / (N ||A||²) + λ·TV(x) / N`` (per image entry, docs/weights.md): the loss is
            ``data_loss + λ/c · mean TV`` with c = ``problem.per_pixel_data_scale()``.
        tv_kind: 'anisotropic' or 'isotropic'.
        tv_eps: smoothing of the isotropic norm at zero gradient.
        **kwargs: the options of :class:`Method` (lr, input, reg_noise_std, exp_weight, ...).
    """

    name = "tv"

    def __init__(
        self,
        tv_weight: float = 1e-2,
        tv_kind: str = "anisotropic",
        tv_eps: float = 1e-8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_at_least("method.tv_weight", tv_weight, 0)
        check_choice("method.tv_kind", tv_kind, TV_KINDS)
        check_positive("method.tv_eps", tv_eps)  # isotropic TV's gradient is 0/0 at flat pixels without it
        self.tv_weight, self.tv_kind, self.tv_eps = tv_weight, tv_kind, tv_eps

    def setup(self, problem: InverseProblem, network: torch.nn.Module) -> None:
        super().setup(problem, network)
        self.penalty_scale = penalty_scale(problem, "squared")

    def regularizer(self, output: torch.Tensor, problem: InverseProblem, step: int) -> dict[str, torch.Tensor]:
        weight = self.tv_weight * self.penalty_scale
        return {"tv": weight * total_variation(output, self.tv_kind, self.tv_eps, reduction="mean")}
