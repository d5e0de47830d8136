"""Each classical baseline solver reaches a known minimiser: TV-PDHG, CGLS, SIRT (tiny problems)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from untrained.baselines.iterative import cgls, sirt
from untrained.baselines.tv import tv_pdhg
from untrained.operators.base import Identity, MatrixOperator
from untrained.operators.inpainting import Mask
from untrained.operators.mri import MultiCoilMRI
from untrained.tasks.denoising import denoising


def piecewise_constant(size: int = 16) -> torch.Tensor:
    image = torch.full((1, 1, size, size), 0.2, dtype=torch.float64)
    image[..., 4:12, 3:10] = 0.8
    image[..., 10:14, 8:15] = 0.5
    return image


def test_tv_pdhg_identity_small_weight_returns_the_piecewise_constant_image():
    image = piecewise_constant()
    result = tv_pdhg(Identity((1, 16, 16)), image, 1e-4, image.clone() * 0, tolerance=1e-7, max_iterations=20000)
    assert result.converged
    # TV shrinks a region's contrast by about λ·perimeter/area: well below 1e-3 here.
    assert (result.image - image).abs().max() < 1e-3


def test_tv_pdhg_matches_odl_pdhg_on_a_weighted_masking_problem():
    odl = pytest.importorskip("odl")
    size, weight = 10, 0.05
    generator = torch.Generator().manual_seed(0)
    truth = piecewise_constant(size + 6)[..., 3 : 3 + size, 3 : 3 + size]
    noisy = (truth + 0.1 * torch.randn(truth.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    mask = 0.3 + 0.7 * torch.rand((1, size, size), generator=generator, dtype=torch.float64)
    operator = Mask(mask, (1, size, size)).double()
    y = operator(noisy)
    # Every pixel observed (weights in [0.3, 1]): a strongly convex problem with a unique minimiser.
    ours = tv_pdhg(operator, y, weight, y.clone(), (0.0, 1.0), max_iterations=50000, tolerance=1e-10).image

    space = odl.uniform_discr([0, 0], [size, size], (size, size), dtype="float64")  # unit cells: plain sums
    gradient = odl.Gradient(space, pad_mode="symmetric")  # forward differences, last difference zero
    masking = odl.MultiplyOperator(space.element(mask[0].numpy()), domain=space, range=space)
    stacked = odl.BroadcastOperator(masking, gradient)
    data_term = 0.5 * odl.functionals.L2NormSquared(space).translated(space.element(y[0, 0].numpy()))
    penalty = weight * odl.functionals.GroupL1Norm(gradient.range, exponent=2)
    dual = odl.functionals.SeparableSum(data_term, penalty)
    box = odl.functionals.IndicatorBox(space, 0.0, 1.0)
    x = space.zero()
    step = 0.99 / np.sqrt(1.0 + 8.0)
    odl.solvers.pdhg(x, box, dual, stacked, niter=1000, tau=step, sigma=step)
    reference = torch.as_tensor(np.asarray(x.asarray() if hasattr(x, "asarray") else x), dtype=torch.float64)
    assert (ours[0, 0] - reference).abs().max() < 1e-4


def test_tv_sense_fully_sampled_single_coil_with_tiny_weight_returns_the_image():
    size = 16
    generator = torch.Generator().manual_seed(1)
    image = torch.complex(
        torch.rand(1, size, size, generator=generator), torch.rand(1, size, size, generator=generator)
    )
    operator = MultiCoilMRI(torch.ones(1, size, size, dtype=torch.complex64), torch.ones(size, size))
    result = tv_pdhg(operator, operator(image), 1e-7, None, None, max_iterations=5000, tolerance=1e-7)
    assert (result.image - image).abs().max() < 1e-3


def test_cgls_equals_least_squares_on_a_full_rank_system():
    generator = torch.Generator().manual_seed(2)
    matrix = torch.randn(20, 8, generator=generator, dtype=torch.float64)
    y = torch.randn(1, 20, generator=generator, dtype=torch.float64)
    estimate, iterations = cgls(MatrixOperator(matrix), y, 50)
    expected = torch.linalg.lstsq(matrix, y[0]).solution
    assert iterations <= 50
    torch.testing.assert_close(estimate[0], expected, rtol=1e-8, atol=1e-10)


def test_sirt_converges_to_the_solution_of_a_consistent_system():
    generator = torch.Generator().manual_seed(3)
    matrix = torch.rand(30, 10, generator=generator, dtype=torch.float64)
    solution = torch.rand(1, 10, generator=generator, dtype=torch.float64)
    estimate = sirt(MatrixOperator(matrix), solution @ matrix.T, 20000)
    torch.testing.assert_close(estimate, solution, rtol=0, atol=1e-6)


def test_cgls_matches_odl_conjugate_gradient_normal_on_a_ray_transform():
    odl = pytest.importorskip("odl")
    from untrained.operators.ct import RayTransform

    operator = RayTransform(16, 6, impl="astra_cpu")
    generator = torch.Generator().manual_seed(4)
    y = operator(torch.rand((1, 1, 16, 16), generator=generator))
    ours, _ = cgls(operator, y, 5)
    scaled = operator.scale * operator.odl_op
    x = scaled.domain.zero()
    odl.solvers.conjugate_gradient_normal(scaled, x, scaled.range.element(y[0, 0]), niter=5)
    reference = torch.as_tensor(np.asarray(x.asarray() if hasattr(x, "asarray") else x.data.cpu()))
    torch.testing.assert_close(ours[0, 0], reference.float(), rtol=1e-3, atol=1e-4)


def test_tasks_report_the_baseline_iterations():
    problem = denoising(size=16, tv_max_iterations=300)
    assert 0 < problem.info["baseline_iterations"]["tv"] <= 300
    assert problem.info["baseline_converged"]["tv"] in (True, False)
    assert problem.psnr(problem.baselines()["tv"]) > problem.psnr(problem.baselines()["noisy"])


@pytest.mark.parametrize("grayscale", [True, False])
def test_nlm_baseline_beats_the_noisy_input(grayscale):
    problem = denoising(size=48, grayscale=grayscale, bm3d=False, nlm=True, tv_max_iterations=10)
    psnr = {key: float(problem.psnr(image)) for key, image in problem.baselines().items()}
    assert set(psnr) == {"noisy", "tv", "nlm"}
    assert problem.baselines()["nlm"].shape == problem.y.shape
    assert psnr["nlm"] > psnr["noisy"] + 3
