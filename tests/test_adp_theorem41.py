"""Dittmer et al. 2020, Theorem 4.1 reproduced by method=adp: β learned on A's singular vectors (IFT
hypergradients, Rprop steps) matches the closed form to 1e-3 (experiments/adp/dittmer_theorem41.py, small n)."""

from __future__ import annotations

import math

import torch

from experiments.adp.dittmer_theorem41 import TOLERANCE, learn, theorem_41


def test_closed_form_is_the_stationary_point_of_the_per_coordinate_loss():
    sigma = torch.logspace(-3, 0, 50, dtype=torch.float64)
    alpha = 1e-3
    beta = theorem_41(sigma, alpha).requires_grad_()
    # Per singular coordinate the upper loss is ½c²(σβ/(β² + α) − 1)², whatever c = ⟨y, v_i⟩ ≠ 0.
    loss = (0.5 * (sigma * beta / (beta**2 + alpha) - 1) ** 2).sum()
    (gradient,) = torch.autograd.grad(loss, beta)
    assert gradient.abs().max() < 1e-10
    assert torch.allclose(theorem_41(torch.tensor([2 * math.sqrt(alpha)]), alpha), torch.tensor([math.sqrt(alpha)]))


def test_learned_singular_values_match_theorem_41():
    alpha = 1e-3
    run = learn(alpha, steps=60, size=50)
    error = (run["beta"] - theorem_41(run["sigma"], alpha)).abs()
    assert (run["sigma"] >= 2 * math.sqrt(alpha)).sum() >= 3  # both branches of the theorem are tested
    assert error.max() <= TOLERANCE
