"""1D analytic test problems of the analytic deep prior (Dittmer et al. 2020; Salehi et al. 2025).

* ``integration_1d``: the discretised integration operator on [0, 1] (Dittmer et al. 2020, App. 3):
  h/2 on the diagonal, h below it, 0 above, h = 1/n; n = 200 in the paper.
* ``deconvolution_1d``: convolution with a Gaussian kernel as a full n × n matrix (the 1D experiment
  of Salehi et al. 2025, taken from Arndt 2022): A_ij = exp(-(i-j)²/(2 s²)) / (√(2π) s), s = 5 samples.

Noise convention: y = A x† + δ τ with τ ~ N(0, I_n), i.e. δ is the standard deviation of every
entry (Dittmer et al.'s ``y^δ = A_n x† + δτ``); ``snr_db`` sets δ from a target (expected) SNR
10 log10(||A x†||² / (n δ²)) instead; ``info['snr_db']`` is the realised one (the paper quotes 17.06 dB and
18.97 dB for its examples).

Network space is ``(1, n)`` (one channel); ``to_domain`` squeezes the channel and casts to the
operator's dtype. Metrics: ``true_error`` = ||x − x†||₂ (Euclidean, no h weighting) and
``relative_error`` = ||x − x†|| / ||x†||; PSNR uses the range of x† (max − min) as data range, with
the estimate clipped to x†'s range (signals can be negative, so figures show x − min x†).
"""

from __future__ import annotations

import math

import torch

from untrained.baselines.linear import tikhonov, truncated_svd
from untrained.errors import UserError, check_at_least, check_in_range, check_integer, check_positive
from untrained.operators.base import MatrixOperator
from untrained.operators.noise import add_gaussian
from untrained.problem import InverseProblem

DTYPES = {"float32": torch.float32, "float64": torch.float64}
SIGNALS = ("singular", "smooth", "piecewise_constant", "piecewise_linear")
MAX_SIZE = 4096  # n: the full n × n matrix and its SVD (float64) grow as n², n³
MIN_SNR_DB = -40.0  # noise 100 times the signal's size: no reconstruction is meaningful below


def integration_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Dittmer et al.'s A_n: the midpoint-corrected cumulative sum, h/2 on the diagonal, h below."""
    h = 1.0 / n
    return torch.tril(torch.full((n, n), h, dtype=dtype), diagonal=-1) + torch.eye(n, dtype=dtype) * (h / 2)


def gaussian_convolution_matrix(n: int, kernel_std: float = 5.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Full matrix of the convolution with a sampled Gaussian of std ``kernel_std`` samples (zero boundary)."""
    check_in_range(f"task.kernel_std (in samples, at most n = {n})", kernel_std, 0, n, low_open=True)
    index = torch.arange(n, dtype=dtype)
    distance = index[:, None] - index[None, :]
    return torch.exp(-(distance**2) / (2 * kernel_std**2)) / (math.sqrt(2 * math.pi) * kernel_std)


def test_signal(name: str, n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Ground truths on the grid s_i ∈ [-1, 1) of Arndt's reference code (examples bsp 0, 1, 2)."""
    s = torch.linspace(-1, 1, n + 1, dtype=dtype)[:-1] + 1.0 / n
    step = lambda a: (s > a).to(dtype)  # noqa: E731
    if name == "smooth":
        return 0.8 * torch.exp(-32 * (s + 0.3) ** 2) + 0.4 * torch.exp(-16 * (s - 0.1) ** 2)
    if name == "piecewise_constant":
        return step(-0.6) - 0.7 * step(-0.5) - 0.3 * step(0) + 0.7 * step(0.2) - 0.7 * step(0.5)
    if name == "piecewise_linear":
        return (
            (s + 0.7) * step(-0.7)
            - (2 * s + 1) * step(-0.5)
            + (s + 0.3) * step(-0.3)
            + (0.9 - s) * step(-0.1)
            + (s - 0.2) * step(0.2)
            - 0.7 * step(0.4)
            + (3 * s - 1.8) * step(0.6)
            - (3 * s - 1.8) * step(0.8)
        )
    raise UserError(f"task.signal must be one of {SIGNALS}, got '{name}'.")


def singular_vector(matrix: torch.Tensor, index: int) -> torch.Tensor:
    """The index-th right singular vector of A scaled to unit L²([0,1]) norm (Σ h x² = 1), largest entry positive."""
    n = matrix.shape[1]
    check_integer("task.singular_index", index, 0, n - 1)
    u = torch.linalg.svd(matrix)[2][index] * math.sqrt(n)
    return u * torch.sign(u[u.abs().argmax()])


def noise_std(clean: torch.Tensor, delta: float, snr_db: float | None) -> float:
    if snr_db is not None:
        return float(clean.norm() / math.sqrt(clean.numel()) * 10 ** (-snr_db / 20))
    return float(delta)


def analytic_problem(
    name: str,
    matrix: torch.Tensor,
    x_true: torch.Tensor,
    delta: float,
    snr_db: float | None,
    noise_seed: int,
    alpha: float,
    tsvd_threshold: float | None,
) -> InverseProblem:
    """y = A x† + δτ with Tikhonov and TSVD baselines, all in network space (1, 1, n)."""
    check_positive("task.alpha (Tikhonov baseline)", alpha)
    check_at_least("task.delta", delta, 0)  # also when snr_db sets the noise: a negative std is a typo
    if snr_db is not None:
        check_at_least("task.snr_db", snr_db, MIN_SNR_DB)
    if tsvd_threshold is not None:
        check_at_least("task.tsvd_threshold", tsvd_threshold, 0)
    operator = MatrixOperator(matrix)
    clean = operator(x_true[None])
    level = noise_std(clean, delta, snr_db)
    y = add_gaussian(clean, level, noise_seed)
    lo, hi = float(x_true.min()), float(x_true.max())
    threshold = math.sqrt(alpha) if tsvd_threshold is None else tsvd_threshold
    true_norm = x_true.norm()

    def to_domain(x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].to(matrix.dtype)

    def extra_metrics(x: torch.Tensor) -> dict[str, torch.Tensor]:
        error = (to_domain(x) - x_true.to(x.device)).norm()
        return {"true_error": error, "relative_error": error / true_norm}

    network_space = lambda signal: signal[:, None]  # noqa: E731
    snr = 10 * math.log10(float(clean.pow(2).sum()) / max(float((y - clean).pow(2).sum()), 1e-300))
    return InverseProblem(
        name=name,
        operator=operator,
        y=y,
        image_shape=(1, matrix.shape[1]),
        x_true=network_space(x_true[None]),
        init=network_space(operator.adjoint(y)),
        init_from=lambda measured: network_space(operator.adjoint(measured)),
        baselines={
            "tikhonov": network_space(tikhonov(matrix, y, alpha)),
            "tsvd": network_space(truncated_svd(matrix, y, threshold)),
        },
        to_domain=to_domain,
        from_domain=network_space,
        to_display=lambda x: x - lo,
        data_range=max(hi - lo, 1e-12),
        extra_metrics=extra_metrics,
        metric_conventions={
            "display": f"x − min(x†) (data_range = max(x†) − min(x†) = {max(hi - lo, 1e-12):.6g})",
            "true_error": "‖x − x†‖₂ of the signal, not clamped",
            "relative_error": "‖x − x†‖₂ / ‖x†‖₂, not clamped",
        },
        info={"delta": level, "snr_db": snr, "alpha": alpha, "tsvd_threshold": threshold},
    )


def check_size(size) -> int:
    check_integer("task.size (the signal length n of a 1D task)", size, 2, MAX_SIZE)
    return size


def integration_1d(
    size: int = 200,
    signal: str = "singular",
    singular_index: int = 3,
    delta: float = 0.01,
    snr_db: float | None = 17.06,
    noise_seed: int = 0,
    alpha: float = 1e-3,
    tsvd_threshold: float | None = None,
    dtype: str = "float64",
) -> InverseProblem:
    """Dittmer et al. 2020's integration problem; ``signal='singular'`` uses x† = u_{singular_index}."""
    n, torch_dtype = check_size(size), DTYPES[dtype]
    matrix = integration_matrix(n, torch_dtype)
    x_true = singular_vector(matrix, singular_index) if signal == "singular" else test_signal(signal, n, torch_dtype)
    return analytic_problem("integration_1d", matrix, x_true, delta, snr_db, noise_seed, alpha, tsvd_threshold)


def deconvolution_1d(
    size: int = 200,
    signal: str = "piecewise_constant",
    kernel_std: float = 5.0,
    delta: float = 0.005,
    snr_db: float | None = None,
    noise_seed: int = 0,
    alpha: float = 1.5e-3,
    tsvd_threshold: float | None = None,
    dtype: str = "float64",
) -> InverseProblem:
    """Gaussian deconvolution as a full matrix (Salehi et al. 2025, Sec. 4.1; Arndt 2022)."""
    n, torch_dtype = check_size(size), DTYPES[dtype]
    if signal == "singular":
        raise UserError("task.signal=singular is only defined for integration_1d: choose smooth or piecewise_*.")
    matrix = gaussian_convolution_matrix(n, kernel_std, torch_dtype)
    return analytic_problem(
        "deconvolution_1d",
        matrix,
        test_signal(signal, n, torch_dtype),
        delta,
        snr_db,
        noise_seed,
        alpha,
        tsvd_threshold,
    )
