"""1D analytic tasks, the unrolled proximal gradient network and the analytic deep prior (CPU, small)."""

import json
import math
from pathlib import Path

import pytest
import torch

from untrained.baselines.linear import tikhonov, truncated_svd
from untrained.errors import UserError
from untrained.methods.adp import AnalyticDeepPrior, hypergradient, upper_objective
from untrained.networks.unrolled_pg import UnrolledProximalGradient
from untrained.operators.base import adjointness_error
from untrained.operators.blur import Blur
from untrained.problem import InverseProblem
from untrained.run import build_module
from untrained.tasks.analytic_1d import deconvolution_1d, integration_1d, integration_matrix
from untrained.train import train

ADP_FAST = [
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "callbacks=none",
    "network=unrolled_pg",
    "method=adp",
]


def test_integration_operator_structure():
    n = 8
    matrix = integration_matrix(n)
    h = 1 / n
    assert torch.allclose(torch.diag(matrix), torch.full((n,), h / 2, dtype=matrix.dtype))
    assert torch.all(torch.triu(matrix, 1) == 0)
    assert torch.allclose(matrix[torch.tril_indices(n, n, -1).unbind()], torch.tensor(h, dtype=matrix.dtype))
    problem = integration_1d(size=200, snr_db=17.06)
    assert adjointness_error(problem.operator) < 1e-10
    # The continuous operator's largest singular value is 2/π.
    assert abs(float(torch.linalg.svdvals(problem.operator.matrix)[0]) - 2 / math.pi) < 1e-3
    assert problem.image_shape == (1, 200) and problem.y.shape == (1, 200)
    assert abs(problem.info["snr_db"] - 17.06) < 0.5  # snr_db sets δ = ||Ax†||/√n · 10^(-SNR/20)


def test_tikhonov_and_tsvd_baselines():
    problem = integration_1d(size=64, snr_db=30, alpha=1e-4)
    matrix, y = problem.operator.matrix, problem.y
    x = tikhonov(matrix, y, 1e-4)
    assert torch.allclose(x @ (matrix.T @ matrix) + 1e-4 * x, y @ matrix, atol=1e-10)  # normal equations
    assert torch.allclose(truncated_svd(matrix, y, 0.0), torch.linalg.solve(matrix, y.T).T, atol=1e-6)
    metrics = {k: problem.extra_metrics(v) for k, v in problem.baselines().items()}
    adjoint_error = float(problem.extra_metrics(problem.init)["true_error"])
    for values in metrics.values():
        assert float(values["true_error"]) < 0.5 * adjoint_error
        assert float(values["relative_error"]) == pytest.approx(float(values["true_error"] / problem.x_true.norm()))
    deconv = deconvolution_1d(size=100)
    assert adjointness_error(deconv.operator) < 1e-10
    assert float(deconv.psnr(deconv.baseline_tikhonov)) > float(deconv.psnr(torch.zeros_like(deconv.x_true)))


def test_bad_inputs_raise_user_errors():
    with pytest.raises(UserError):
        integration_1d(size=16, delta=-1.0, snr_db=None)
    with pytest.raises(UserError):
        deconvolution_1d(size=16, signal="singular")
    with pytest.raises(UserError):
        UnrolledProximalGradient(regularizer="huber")


def bound_network(problem, **kwargs) -> UnrolledProximalGradient:
    network = UnrolledProximalGradient(**kwargs)
    network.bind(problem)
    return network


def finite_difference_gradient(network, problem, x0, direction, step=1e-5, tol=1e-13):
    """Central difference of U(B) along a direction in B, with x(B) solved to machine accuracy."""
    weight = network.operator.weight
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            weight.add_(sign * step * direction)
        x, _ = network.solve(x0, tol, 20000, accelerate=True)
        values.append(upper_objective(network, problem, x, 0.5)[0])
        with torch.no_grad():
            weight.sub_(sign * step * direction)
    return float((values[0] - values[1]) / (2 * step))


@pytest.mark.parametrize("regularizer", ["l2", "elastic_net", "tv"])
def test_ift_hypergradient_matches_finite_differences(regularizer):
    problem = deconvolution_1d(size=24, kernel_std=1.5, delta=0.01, signal="piecewise_constant")
    kwargs = {
        "l2": {"alpha": 1e-2},
        "elastic_net": {"alpha": 2e-2, "alpha_l2": 1e-2},
        "tv": {"alpha": 1e-2, "tv_eps": 1e-2},
    }
    network = bound_network(problem, regularizer=regularizer, **kwargs[regularizer])
    x0 = torch.zeros_like(problem.y)
    with torch.no_grad():  # move away from B = A, where the H¹ norm is not differentiable
        network.operator.weight.add_(
            1e-2
            * torch.randn(
                network.operator.weight.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
            )
        )
    x, _ = network.solve(x0, 1e-13, 100000, accelerate=True)
    grads, _, _ = hypergradient(network, problem, x, 0.5, 1e-14, 1000)
    direction = torch.randn(grads[0].shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    predicted = float((grads[0] * direction).sum())
    assert predicted == pytest.approx(finite_difference_gradient(network, problem, x, direction, tol=1e-11), rel=1e-3)


def test_unrolled_gradient_to_convergence_matches_ift():
    problem = integration_1d(size=16, snr_db=20)
    network = bound_network(problem, alpha=0.05, layers=3000)
    x = network.to_domain(network(torch.zeros(1, 1, 16, dtype=torch.float64)))
    loss, _ = upper_objective(network, problem, x, 0.0)
    unrolled = torch.autograd.grad(loss, network.operator.weight)[0]
    fixed_point, _ = network.solve(x.detach(), 1e-13, 100000, accelerate=True)
    ift = hypergradient(network, problem, fixed_point, 0.0, 1e-14, 1000)[0][0]
    assert float((unrolled - ift).norm() / ift.norm()) < 1e-3


def test_singular_value_operator_matches_full_matrix():
    problem = integration_1d(size=32)
    full, svd = bound_network(problem), bound_network(problem, operator="singular_values")
    x = torch.randn(2, 32, dtype=torch.float64)
    assert torch.allclose(full.operator(x), svd.operator(x), atol=1e-12)
    assert torch.allclose(full.operator.adjoint(x), svd.operator.adjoint(x), atol=1e-12)


@pytest.mark.parametrize("solver", ["unrolled", "ift", "maid"])
def test_short_adp_run_lowers_upper_loss(make_cfg, solver):
    overrides = ADP_FAST + [
        "task=integration_1d",
        "task.size=50",
        "trainer.max_steps=15",
        "module.log_every=5",
        f"method.solver={solver}",
        "method.lower_max_iter=200",
        "network.layers=20",
    ]
    cfg = make_cfg(overrides, fast=False, subdir=solver)
    metrics = train(cfg)
    assert metrics["status"] == "completed" and metrics["steps"] == 15
    history = json.loads((Path(cfg.paths.output_dir) / "history.json").read_text())
    losses = history["upper_loss"]
    assert losses[-1] < losses[0]
    assert "final_true_error" in metrics and metrics["final_true_error"] > 0
    if solver == "maid":
        assert history["eps"][-1] != history["eps"][0]  # the accuracy adapts
    if solver == "unrolled":
        assert history["operator_change"][-1] > 0


def test_adp_needs_the_unrolled_network(make_cfg):
    cfg = make_cfg(["task=integration_1d", "task.size=32", "method=adp", "network.dim=1"], subdir="bad")
    with pytest.raises(UserError, match="unrolled_pg"):
        build_module(cfg)
    with pytest.raises(UserError, match="sgd"):
        AnalyticDeepPrior(solver="maid", optimizer="adam")


@pytest.mark.parametrize("task", ["integration_1d", "deconvolution_1d"])
def test_vanilla_dip_runs_on_1d_tasks(make_cfg, task):
    overrides = [
        "experiment=dip_1d",
        f"task={task}",
        "task.size=32",
        "trainer.max_steps=4",
        "network.channels_down=[8,8,8]",
        "network.channels_up=[8,8,8]",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "callbacks=none",
    ]
    metrics = train(make_cfg(overrides, fast=False, subdir=task))
    assert metrics["status"] == "completed" and metrics["steps"] == 4
    assert math.isfinite(metrics["final_true_error"]) and math.isfinite(metrics["baseline_tikhonov_psnr"])


def test_kernel_parameterised_operator_hypergradient_with_tv():
    """Colour deblurring with a learned kernel: B keeps A's convolution; the IFT gradient matches differences."""
    generator = torch.Generator().manual_seed(0)
    kernel = torch.diag(torch.tensor([0.2, 0.6, 0.2], dtype=torch.float64))  # diagonal motion, invertible
    operator = Blur(kernel, (3, 10, 10), "circular")
    assert adjointness_error(operator) < 1e-10
    x_true = torch.rand(1, 3, 10, 10, generator=generator, dtype=torch.float64)
    y = operator(x_true) + 0.02 * torch.randn(1, 3, 10, 10, generator=generator, dtype=torch.float64)
    problem = InverseProblem("deblurring", operator, y, (3, 10, 10), x_true=x_true)
    network = bound_network(problem, regularizer="tv", alpha=0.02, tv_eps=1e-2)
    assert network.operator.weight.shape == kernel.shape and network.operator.weight.requires_grad
    with torch.no_grad():
        network.operator.weight.add_(0.01 * torch.randn(kernel.shape, generator=generator, dtype=torch.float64))
    x, _ = network.solve(torch.zeros_like(y), 1e-11, 20000, accelerate=True)
    grads, _, _ = hypergradient(network, problem, x, 0.5, 1e-13, 2000)
    direction = torch.randn(kernel.shape, generator=generator, dtype=torch.float64)
    predicted = float((grads[0] * direction).sum())
    assert predicted == pytest.approx(finite_difference_gradient(network, problem, x, direction, tol=1e-11), rel=1e-3)


def test_maid_learns_the_kernel_on_2d_colour_deblurring(make_cfg):
    """float32 colour deblurring with the H¹ term: MAID accepts steps from B = A (where the H¹ norm has a kink)
    and the exact upper-level objective U(B) = ½||A x(B) − y||² + β||B − A||_{H¹} drops below U(A)."""
    overrides = ADP_FAST + [
        "task=deblurring",
        "task.image=astronaut",
        "task.size=24",
        "task.kernel.kind=motion",
        "task.kernel.length=3",
        "task.noise_level=0.0196",
        "network.regularizer=tv",
        "network.alpha=3e-3",
        "network.tv_eps=1e-3",
        "method.solver=maid",
        "method.sobolev_weight=0.5",
        "method.lr=1e-5",
        "method.init=measurement",
        "method.lower_solver=fista",
        "method.maid_eps=1e-2",
        "method.maid_min_eps=1e-6",
    ]
    module = build_module(make_cfg(overrides, fast=False))
    method, network, problem = module.method, module.network, module.problem
    assert problem.y.dtype == torch.float32
    exact_before, _ = network.solve(problem.init, 1e-5, 5000, accelerate=True)
    objective_before = float(upper_objective(network, problem, exact_before, 0.5)[0])
    optimizer = method.configure_optimizer(network)
    accepted = 0
    for step in range(20):
        out = method.optimization_step(network, problem, step, optimizer, lambda loss: loss.backward())
        method.after_step(network, problem, step, out)
        assert math.isfinite(float(out.loss))
        accepted += float(out.logs["step_size"]) > 0
    kernel_change = float((network.operator.weight - network.operator.reference).norm())
    exact_after, _ = network.solve(exact_before, 1e-5, 5000, accelerate=True)
    assert accepted >= 1 and kernel_change > 0
    assert float(upper_objective(network, problem, exact_after, 0.5)[0]) < objective_before
