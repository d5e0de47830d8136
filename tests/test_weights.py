"""The per-pixel weight convention (docs/weights.md): the same λ gives the same balance on every operator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import compose_config
from untrained.methods.base import penalty_scale
from untrained.methods.tv import TVDIP
from untrained.operators.base import MatrixOperator, euclidean_norm
from untrained.problem import InverseProblem
from untrained.regularizers import total_variation
from untrained.run import build_module

CONF = Path(__file__).resolve().parents[1] / "conf"
N = 24


def signal_problem(matrix: torch.Tensor, y: torch.Tensor) -> InverseProblem:
    """A 1D problem in network space (1, N): the operator acts on (B, N)."""
    return InverseProblem(
        "signal",
        MatrixOperator(matrix),
        y[None],
        (1, N),
        to_domain=lambda x: x[:, 0],
        from_domain=lambda x: x[:, None],
    )


@pytest.fixture
def problems():
    """One problem three ways with the same minimisers: as given, with A and y scaled by 7, and with every
    measurement repeated three times (m × 3, ||A|| × √3)."""
    g = torch.Generator().manual_seed(0)
    matrix = torch.randn(10, N, generator=g, dtype=torch.float64) / 4
    y = matrix @ torch.cumsum(torch.randn(N, generator=g, dtype=torch.float64), 0) / 5
    return [
        signal_problem(matrix, y),
        signal_problem(7 * matrix, 7 * y),
        signal_problem(matrix.repeat(3, 1), y.repeat(3)),
    ]


def loss_gradient(problem: InverseProblem, form: str, weight: float, x: torch.Tensor) -> torch.Tensor:
    """∇ₓ of the loss of each data-term form with a per-pixel penalty weighted by λ · penalty_scale."""
    x = x.clone().requires_grad_(True)
    scale = penalty_scale(problem, form)
    if form == "squared":  # TV-DIP, aSeqDIP/Self-Guided with means of squares, DeepRED's μ, OES's KL
        loss = problem.data_loss(x) + weight * scale * total_variation(x, reduction="mean")
    elif form == "root":  # DRP's RMSE + TV
        loss = problem.data_loss(x).sqrt() + weight * scale * total_variation(x, reduction="mean")
    else:  # aSeqDIP's unsquared norms ||A x − y|| + λ ||x − z||
        loss = euclidean_norm(problem.residual(x)) + weight * scale * euclidean_norm(x - 0.5)
    loss.backward()
    return x.grad


@pytest.mark.parametrize("form", ["squared", "root", "norm"])
def test_the_same_weight_gives_the_same_descent_direction_whatever_the_scale_and_size_of_a(problems, form):
    x = torch.linspace(0, 1, N, dtype=torch.float64)[None, None] ** 2
    gradients = [loss_gradient(p, form, 0.3, x) for p in problems]
    directions = [g / g.norm() for g in gradients]
    for direction in directions[1:]:
        torch.testing.assert_close(direction, directions[0], rtol=1e-4, atol=1e-6)
    # Without the factor the balance moves: the penalty's share of the gradient differs between the problems.
    raw = [loss_gradient(p, form, 0.3 / penalty_scale(p, form), x) for p in problems]
    assert not torch.allclose(raw[1] / raw[1].norm(), raw[0] / raw[0].norm(), rtol=1e-2)


def test_per_pixel_data_scale_counts_entries_and_the_operator_norm(problems):
    base, scaled, repeated = (p.per_pixel_data_scale() for p in problems)
    norm = problems[0].operator_norm()
    assert norm == pytest.approx(float(torch.linalg.matrix_norm(problems[0].operator.matrix, 2)), rel=1e-4)
    assert base == pytest.approx(10 / (N * norm**2), rel=1e-4)
    assert scaled == pytest.approx(base / 49, rel=1e-4)
    assert repeated == pytest.approx(base, rel=1e-4)  # m × 3 and ||A||² × 3


@pytest.mark.parametrize("method", ["tv", "drp", "aseqdip", "self_guided", "deepred", "oes", "edip_pretrain"])
def test_denoising_keeps_the_reference_weights_exactly(make_cfg, method):
    """A = I, m = N: the factor is exactly 1, so nothing changes numerically where the references denoise."""
    module = build_module(
        make_cfg([f"method={method}", "method.mask_steps=2"] if method == "oes" else [f"method={method}"])
    )
    assert module.problem.per_pixel_data_scale() == 1.0
    assert module.method.penalty_scale == 1.0


def test_tv_dip_on_ct_divides_the_weight_by_the_per_pixel_scale(make_cfg):
    module = build_module(make_cfg(["task=ct", "method=tv", "task.size=32"]))
    problem, method = module.problem, module.method
    c = problem.per_pixel_data_scale()
    assert problem.operator_norm() == pytest.approx(1.0, rel=1e-3)  # the CT operator is normalised
    assert c == pytest.approx(problem.y.numel() / 32**2, rel=1e-3)
    assert method.tv_weight == pytest.approx(1.5e-4)  # conf/method_task/tv_ct.yaml, converted from dival
    output = torch.rand(1, 1, 32, 32)
    expected = 1.5e-4 / c * total_variation(output, reduction="mean")
    torch.testing.assert_close(method.regularizer(output, problem, 0)["tv"], expected)


def test_tv_dip_setup_sets_its_factor_on_any_network():
    problem = signal_problem(torch.eye(N, dtype=torch.float64)[:12], torch.zeros(12, dtype=torch.float64))
    method = TVDIP(tv_weight=0.1)
    method.setup(problem, nn.Identity())
    assert method.penalty_scale == pytest.approx(2.0)  # m / N = 1/2 with ||A|| = 1


@pytest.mark.parametrize("path", sorted((CONF / "method_task").glob("*.yaml")), ids=lambda p: p.stem)
def test_method_task_weights_compose(tmp_path, path):
    parts = path.stem.split("_")
    method, task = next(
        ("_".join(parts[:i]), "_".join(parts[i:]))
        for i in range(len(parts) - 1, 0, -1)
        if (CONF / "method" / f"{'_'.join(parts[:i])}.yaml").is_file()
    )
    cfg = compose_config([f"method={method}", f"task={task}"], tmp_path, fast=False)
    for key in ("tv_weight", "ae_weight", "guidance_weight", "red_weight", "mu", "kl_weight"):
        if key in cfg.method:
            assert float(cfg.method[key]) >= 0
    assert "tv_reduction" not in cfg.method  # one convention: per-pixel means
