"""Unrolled proximal gradient network of the analytic deep prior (Dittmer et al. 2020, Sec. 3.2 and 4).

L identical layers x^{k+1} = prox_{λαR}(x^k − λ B*(B x^k − y)) whose only weights are a learned
operator B, initialised at the task operator A. The network needs the problem (y and A), so it is
built empty by ``instantiate(cfg.network, ...)`` and bound to the problem by ``bind(problem)``,
which ``method=adp`` calls in its ``setup``. B is a learnable copy of A: the task operator with
its ``matrix`` (1D tasks: a full n × n matrix) or ``kernel`` (deblurring: a convolution kernel)
buffer turned into a parameter, so B keeps A's boundary handling and adjoint.

Regularizers R (``regularizer``):
  * ``l2``: R = ½||x||², prox = v / (1 + λα) (Dittmer et al.'s experiments);
  * ``elastic_net``: α||x||₁ + (α_l2/2)||x||², prox = soft(v, λα) / (1 + λα_l2) (Arndt 2022; Salehi et al. 2025, 1D);
  * ``tv``: smoothed TV α Σ sqrt(|∇x|² + ε) (Salehi et al. 2025, 2D); smooth, so the layer takes a plain
    gradient step on it (the prox of the zero function is the identity).

Besides the forward pass (L layers, differentiable in B: the unrolled/LISTA solver), the network
solves its lower-level problem min_x J_B(x) = ½||Bx − y||² + αR(x) to a tolerance on the gradient
mapping (``solve``) and exposes the twice-differentiable part of J_B and the support of x for
hypergradients by the implicit function theorem (``methods/adp.py``).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from untrained.errors import UserError, check_at_least, check_choice, check_integer, check_positive
from untrained.networks.base import Network
from untrained.operators.base import LinearOperator, operator_norm
from untrained.regularizers import total_variation

REGULARIZERS = ("l2", "elastic_net", "tv")
LEARNABLE_BUFFERS = ("matrix", "kernel")
MAX_LAYERS = 10_000  # per forward pass, each differentiated through (Arndt's LISTA: 50)


def sobolev_norm(difference: torch.Tensor) -> torch.Tensor:
    """Discrete H¹ norm sqrt(||D||² + Σ ||∂_i D||²) of a kernel, differences along its last (up to two) axes.

    For a matrix B − A this is the H¹ norm of the integral kernel k_B − k_A (Arndt 2022's ADP-H¹, grid
    constants absorbed into the weight); for a convolution kernel it is the reference code's sobolev_norm.
    """
    squared = difference.pow(2).sum()
    for axis in range(max(difference.ndim - 2, 0), difference.ndim):
        squared = squared + torch.diff(difference, dim=axis).pow(2).sum()
    # The norm is not differentiable at B = A (the start): use the subgradient 0 there. The sqrt only sees
    # positive values (a clamp to a tiny constant underflows to 0 in float32, and 0 · ∞ gives NaN gradients).
    positive = squared > 0
    return torch.where(positive, torch.where(positive, squared, torch.ones_like(squared)).sqrt(), squared)


class LearnedOperator(nn.Module):
    """A copy of a linear task operator whose ``matrix`` or ``kernel`` is a trainable parameter."""

    def __init__(self, operator: LinearOperator):
        super().__init__()
        if not getattr(operator, "linear", False):
            raise UserError("The analytic deep prior needs a linear task operator (a matrix or a convolution kernel).")
        name = next((n for n in LEARNABLE_BUFFERS if isinstance(getattr(operator, n, None), torch.Tensor)), None)
        if name is None:
            raise UserError(
                f"{type(operator).__name__} has no 'matrix' or 'kernel' to learn: method=adp supports the 1D tasks "
                "(integration_1d, deconvolution_1d) and convolution (deblurring) tasks."
            )
        self.name = name
        self.operator = copy.deepcopy(operator)
        value = self.operator._buffers.pop(name)
        self.operator.register_parameter(name, nn.Parameter(value.detach().clone()))
        self.register_buffer("reference", value.detach().clone())

    @property
    def weight(self) -> nn.Parameter:
        return getattr(self.operator, self.name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.operator.adjoint(y)

    def sobolev(self) -> torch.Tensor:
        """||B − A||_{H¹} of the learned kernel (matrix) against the task's."""
        return sobolev_norm(self.weight - self.reference)


class SingularValueOperator(nn.Module):
    """B = Σ β_i v_i u_iᵀ: A's singular vectors with learned singular values β (Dittmer et al., Sec. 4.1.2).

    β starts at A's σ; Theorem 4.1 gives the optimal β of the upper level for R = ½||·||².
    """

    def __init__(self, operator: LinearOperator):
        super().__init__()
        matrix = getattr(operator, "matrix", None)
        if not isinstance(matrix, torch.Tensor):
            raise UserError(
                "network.operator=singular_values needs a matrix operator (integration_1d, deconvolution_1d)."
            )
        left, sigma, right_t = torch.linalg.svd(matrix, full_matrices=False)
        self.register_buffer("left", left)
        self.register_buffer("right_t", right_t)
        self.register_buffer("reference", sigma.clone())
        self.weight = nn.Parameter(sigma.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x @ self.right_t.T) * self.weight) @ self.left.T

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return ((y @ self.left) * self.weight) @ self.right_t

    def sobolev(self) -> torch.Tensor:
        return sobolev_norm(self.left @ torch.diag(self.weight - self.reference) @ self.right_t)


OPERATORS = {"full": LearnedOperator, "singular_values": SingularValueOperator}


def _as_signal_batch(x: torch.Tensor) -> torch.Tensor:
    """TV works on (B, C, *spatial): a batch of 1D signals (B, n) gets a channel axis."""
    return x[:, None] if x.ndim == 2 else x


class Regularizer:
    """αR split for proximal gradient: ``prox`` of the prox part, ``smooth`` for gradient steps.

    ``curvature`` is the twice-differentiable part of αR whose Hessian enters the IFT; ``support``
    masks the coordinates where x varies smoothly with B (all but the zeros of an ℓ1 term).
    """

    def __init__(self, kind: str, alpha: float, alpha_l2: float = 0.0, tv_eps: float = 1e-4):
        check_choice("network.regularizer", kind, REGULARIZERS)
        check_at_least("network.alpha", alpha, 0)
        check_at_least("network.alpha_l2", alpha_l2, 0)
        check_positive("network.tv_eps", tv_eps)
        if kind == "l2" and alpha <= 0:
            raise UserError(
                "network.alpha must be positive for regularizer=l2 (the lower level must be strongly convex)."
            )
        self.kind, self.alpha, self.alpha_l2, self.tv_eps = kind, alpha, alpha_l2, tv_eps

    def value(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "l2":
            return 0.5 * self.alpha * x.pow(2).sum()
        if self.kind == "elastic_net":
            return self.alpha * x.abs().sum() + 0.5 * self.alpha_l2 * x.pow(2).sum()
        return self.smooth(x)

    def smooth(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.kind != "tv":
            return None
        return self.alpha * total_variation(_as_signal_batch(x), "isotropic", self.tv_eps, "sum")

    def prox(self, v: torch.Tensor, step: float) -> torch.Tensor:
        if self.kind == "l2":
            return v / (1 + step * self.alpha)
        if self.kind == "elastic_net":
            return torch.sign(v) * (v.abs() - step * self.alpha).clamp_min(0) / (1 + step * self.alpha_l2)
        return v

    def curvature(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "l2":
            return self.value(x)
        if self.kind == "elastic_net":
            return 0.5 * self.alpha_l2 * x.pow(2).sum()
        return self.smooth(x)

    def support(self, x: torch.Tensor) -> torch.Tensor | None:
        return (x != 0).to(x.dtype) if self.kind == "elastic_net" else None

    def lipschitz(self, spatial_dims: int) -> float:
        """Lipschitz constant of the gradient of the smooth part (||∇||² ≤ 4d for forward differences)."""
        return 4 * spatial_dims * self.alpha / math.sqrt(self.tv_eps) if self.kind == "tv" else 0.0


class UnrolledProximalGradient(Network):
    """L unrolled proximal gradient layers with a learned operator B (call ``bind(problem)`` first).

    Args:
        in_channels, out_channels: from train(); the input is the starting point x⁰ in network space.
        layers: L, layers per forward pass (Dittmer et al.: 10; Arndt's LISTA: 50).
        alpha: α, the lower-level regularization weight.
        regularizer: 'l2', 'elastic_net' or 'tv'.
        alpha_l2: the ℓ2 weight of the elastic net.
        tv_eps: smoothing of the TV norm, sqrt(|∇x|² + tv_eps).
        step_size: λ; null = 1/(||A||² + L_R) (Dittmer et al.: 1/μ, μ the largest eigenvalue of AᵀA; L_R the
            Lipschitz constant of the smoothed TV gradient, 4·d·α/√tv_eps, 0 for the prox regularizers).
        operator: 'full' (B a copy of A's matrix or kernel, all entries learned) or 'singular_values'
            (B = V diag(β) Uᵀ with A's singular vectors; matrix tasks only).
    """

    downsampling_factor = 1

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        layers: int = 10,
        alpha: float = 1e-3,
        regularizer: str = "l2",
        alpha_l2: float = 0.0,
        tv_eps: float = 1e-4,
        step_size: float | None = None,
        operator: str = "full",
    ):
        super().__init__()
        check_choice("network.operator", operator, OPERATORS)
        check_integer("network.layers", layers, 1, MAX_LAYERS)
        if step_size is not None:
            check_positive("network.step_size (or null)", step_size)
        self.layers, self.requested_step, self.parameterization = layers, step_size, operator
        self.regularizer = Regularizer(regularizer, alpha, alpha_l2, tv_eps)
        self.operator: LearnedOperator | SingularValueOperator | None = None
        self.step_size = float("nan")

    # Binding ------------------------------------------------------------------------------------
    def bind(self, problem) -> None:
        """Create B = A (a parameter) and keep y and the network-space conversions of ``problem``."""
        self.operator = OPERATORS[self.parameterization](problem.operator)
        self.register_buffer("y", problem.y.detach().clone())
        self._to_domain, self._from_domain = problem.to_domain, problem.from_domain
        lipschitz = operator_norm(problem.operator, iterations=100) ** 2 + self.regularizer.lipschitz(
            len(problem.image_shape) - 1
        )
        if self.requested_step is not None and not self.requested_step < 2 / lipschitz:
            raise UserError(
                f"network.step_size={self.requested_step} makes proximal gradient diverge: use a step "
                f"below 2/L = {2 / lipschitz:.4g} (L = ||A||² + the regularizer's Lipschitz constant), "
                f"or null."
            )
        self.step_size = self.requested_step or 1.0 / lipschitz

    def check_bound(self) -> None:
        if self.operator is None:
            raise UserError("network=unrolled_pg needs the problem's operator and data: use it with method=adp.")

    # Lower-level problem ------------------------------------------------------------------------
    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """J_B(x) = ½||Bx − y||² + αR(x) for x in the operator's domain."""
        return 0.5 * (self.operator(x) - self.y).pow(2).sum() + self.regularizer.value(x)

    def curvature_objective(self, x: torch.Tensor) -> torch.Tensor:
        """The twice-differentiable part of J_B, whose Hessian (on the support) the IFT inverts."""
        return 0.5 * (self.operator(x) - self.y).pow(2).sum() + self.regularizer.curvature(x)

    def support(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.regularizer.support(x)

    def layer(self, x: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
        """One proximal gradient step; differentiable in B when ``create_graph``."""
        gradient = self.operator.adjoint(self.operator(x) - self.y)
        if self.regularizer.kind == "tv":
            with torch.enable_grad():
                point = x if x.requires_grad else x.detach().requires_grad_()
                value = self.regularizer.smooth(point)
                gradient = gradient + torch.autograd.grad(value, point, create_graph=create_graph)[0]
        return self.regularizer.prox(x - self.step_size * gradient, self.step_size)

    @torch.no_grad()
    def solve(self, x0: torch.Tensor, tol: float, max_iter: int, accelerate: bool = False) -> tuple[torch.Tensor, int]:
        """Minimise J_B from x0 (domain) by (accelerated) proximal gradient until ||G_λ|| ≤ tol.

        G_λ(v) = (v − T(v))/λ is the gradient mapping (the gradient of J_B when R is smooth).
        Returns the last iterate T(v) and the number of iterations.
        """
        self.check_bound()
        x = point = x0.detach()
        momentum = 1.0
        for iteration in range(1, max_iter + 1):
            update = self.layer(point, create_graph=False).detach()
            if (point - update).norm() / self.step_size <= tol:
                return update, iteration
            if accelerate:
                next_momentum = (1 + math.sqrt(1 + 4 * momentum**2)) / 2
                point = update + (momentum - 1) / next_momentum * (update - x)
                momentum = next_momentum
            else:
                point = update
            x = update
        return x, max_iter

    # Network --------------------------------------------------------------------------------------
    def to_domain(self, x: torch.Tensor) -> torch.Tensor:
        return self._to_domain(x)

    def from_domain(self, x: torch.Tensor) -> torch.Tensor:
        return self._from_domain(x)

    def compute(self, x0: torch.Tensor) -> torch.Tensor:
        """L layers from x⁰ (network space) → x^L (network space)."""
        self.check_bound()
        x = self.to_domain(x0)
        for _ in range(self.layers):
            x = self.layer(x)
        return self.from_domain(x)
