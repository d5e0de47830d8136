"""Forward operators: batch-first torch modules with ``forward`` (A) and ``adjoint`` (A^H).

Every operator maps a batch ``(B, *domain_shape)`` to ``(B, *range_shape)``. Domain and range may
be real or complex (``domain_dtype`` / ``range_dtype``). Operators hold their fixed data (kernels,
masks, coil maps) as buffers so ``.to(device)`` moves them with the LightningModule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Operator(nn.Module):
    """A (possibly non-linear) differentiable forward model y = A(x)."""

    domain_shape: tuple[int, ...]
    range_shape: tuple[int, ...]
    domain_dtype: torch.dtype = torch.float32
    range_dtype: torch.dtype = torch.float32
    linear: bool = False
    # Whether applying it is torch's own GPU work (no host round trip, no external kernels): a CUDA
    # graph can record it.
    capturable: bool = True
    # Whether torch.func.vmap can map it (batched fits' vmap mode): torch operations, or a batching rule.
    vmappable: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def check_domain(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != tuple(self.domain_shape):
            raise ValueError(
                f"{type(self).__name__} expects inputs of shape (B, {', '.join(map(str, self.domain_shape))}), "
                f"got {tuple(x.shape)}: resize the image or change the task size."
            )


class LinearOperator(Operator):
    """A linear operator with an explicit adjoint.

    Subclasses implement ``forward`` and ``adjoint``. ``normal`` (A^H A) is provided.
    """

    linear = True

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return self.adjoint(self.forward(x))


class Identity(LinearOperator):
    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32):
        super().__init__()
        self.domain_shape = self.range_shape = tuple(shape)
        self.domain_dtype = self.range_dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y


class MatrixOperator(LinearOperator):
    """A dense matrix acting on 1D signals of shape (B, n) -> (B, m)."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        self.register_buffer("matrix", matrix)
        self.range_shape, self.domain_shape = (matrix.shape[0],), (matrix.shape[1],)
        self.domain_dtype = self.range_dtype = matrix.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix.T

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y @ self.matrix.conj()


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real part of the batch-summed inner product <a, b> = sum conj(a) * b."""
    return torch.sum(torch.conj(a) * b).real if a.is_complex() else torch.sum(a * b)


def mean_squared_magnitude(t: torch.Tensor) -> torch.Tensor:
    """Mean of |t|² over t's entries. Complex tensors go through their real view: twice the mean of its
    squares (torch's complex ``abs`` is slower, forward and backward; see docs/performance.md, "Operators")."""
    return torch.view_as_real(t).square().mean() * 2 if t.is_complex() else t.square().mean()


def euclidean_norm(t: torch.Tensor) -> torch.Tensor:
    """||t||₂ over all entries; complex tensors through their real view (same value: torch's complex
    ``vector_norm`` is slower, forward and backward; see docs/performance.md, "Operators")."""
    return torch.linalg.vector_norm(torch.view_as_real(t) if t.is_complex() else t)


def random_like_space(shape, dtype, batch: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    real_dtype = torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32
    x = torch.randn((batch, *shape), generator=generator, dtype=real_dtype)
    if dtype.is_complex:
        x = torch.complex(x, torch.randn((batch, *shape), generator=generator, dtype=real_dtype))
    return x


@torch.no_grad()
def adjointness_error(op: LinearOperator, batch: int = 2, seed: int = 0) -> float:
    """Relative error of the dot-product test |<Ax, y> - <x, A^H y>| / (|<Ax, y>| + tiny)."""
    g = torch.Generator().manual_seed(seed)
    device = next((b.device for b in op.buffers()), torch.device("cpu"))
    x = random_like_space(op.domain_shape, op.domain_dtype, batch, g).to(device)
    y = random_like_space(op.range_shape, op.range_dtype, batch, g).to(device)
    lhs, rhs = inner(op(x), y), inner(x, op.adjoint(y))
    return float((lhs - rhs).abs() / (lhs.abs() + 1e-30))


@torch.no_grad()
def operator_norm(op: LinearOperator, iterations: int = 50, seed: int = 0) -> float:
    """Largest singular value ||A||_2 by power iteration on A^H A."""
    g = torch.Generator().manual_seed(seed)
    device = next((b.device for b in op.buffers()), torch.device("cpu"))
    x = random_like_space(op.domain_shape, op.domain_dtype, 1, g).to(device)
    norm = torch.tensor(0.0)
    for _ in range(iterations):
        x = x / torch.linalg.vector_norm(x)
        x = op.normal(x)
        norm = torch.linalg.vector_norm(x)
    return float(norm.sqrt())


def conjugate_gradient(
    apply: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    max_iter: int,
    tol: float = 0.0,
    relative: bool = False,
) -> tuple[torch.Tensor, int]:
    """Solve apply(x) = rhs for a Hermitian positive (semi-)definite operator by CG, from x = 0 (real or complex).

    Stops after ``max_iter`` iterations (a fixed count regularises, as in CG-SENSE) or once the residual
    norm is ≤ ``tol`` (≤ ``tol``·||rhs|| if ``relative``). Returns the solution and the iterations done.
    """
    x = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    squared = torch.sum(residual.abs() ** 2)
    stop = tol**2 * (squared if relative else 1.0)
    for iteration in range(max_iter):
        if squared <= stop or squared == 0:
            return x, iteration
        product = apply(direction)
        step = squared / torch.sum(direction.conj() * product).real
        x = x + step * direction
        residual = residual - step * product
        new_squared = torch.sum(residual.abs() ** 2)
        direction = residual + (new_squared / squared) * direction
        squared = new_squared
    return x, max_iter


class MaskedOperator(Operator):
    """M∘A: a forward model whose held-out measurement entries are zeroed (``fit_mask`` 1 = fitted, broadcastable to
    A's range with a leading batch dimension). Attributes it does not have come from A (e.g. a CT operator's fbp)."""

    def __init__(self, inner: Operator, mask: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("fit_mask", mask)
        self.domain_shape, self.range_shape = inner.domain_shape, inner.range_shape
        self.domain_dtype, self.range_dtype = inner.domain_dtype, inner.range_dtype
        self.capturable, self.vmappable = inner.capturable, inner.vmappable

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "inner" or "inner" not in self.__dict__.get("_modules", {}):
                raise
            return getattr(self._modules["inner"], name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.fit_mask


class MaskedLinearOperator(MaskedOperator, LinearOperator):
    """M∘A of a linear A, with adjoint A^H∘M."""

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.adjoint(y * self.fit_mask)


def masked(operator: Operator, mask: torch.Tensor) -> MaskedOperator:
    """M∘A, linear (with its adjoint) when A is."""
    return (
        MaskedLinearOperator(operator, mask) if isinstance(operator, LinearOperator) else MaskedOperator(operator, mask)
    )
