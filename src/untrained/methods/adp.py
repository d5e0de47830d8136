"""The analytic deep prior (Dittmer et al. 2020; Arndt 2022; Salehi et al. 2025): a bilevel problem.

    min_B  U(B) = ½||A x(B) − y||² + β ||B − A||_{H¹}         (upper level, ADP-H¹; β = 0: plain ADP)
    x(B) = argmin_x ½||Bx − y||² + αR(x)                       (lower level, network=unrolled_pg)

Three solvers (``solver``), each making exactly one ``optimizer.step()`` on B per step (the configured
optimizer, SGD by default):

* ``unrolled``: backpropagate through the network's L layers, started at the previous step's output
  (Dittmer et al., App. 3: the implicit network grows by L layers per update; Arndt's "LISTA L=∞").
* ``ift``: solve the lower level to high accuracy (warm-started), then the hypergradient by the
  implicit function theorem, ∇U = ∂_B U − ∂_B⟨∇_x J_B(x*), q⟩ with H q = ∇_x U solved by CG
  (H the Hessian of J_B's twice-differentiable part on the support of x*).
* ``maid``: the method of adaptive inexact descent (Salehi, Mukherjee, Roberts & Ehrhardt 2024): the
  lower level to accuracy ε (gradient-mapping norm), CG to tolerance ε, and a backtracking step
  s = β ρ^i accepted by the inexact sufficient-decrease test
      U(x_new) + ||∇U(x_new)|| ε + L_U ε²/2 − U(x_k) + ||∇U(x_k)|| ε ≤ −c s ||g||²;
  on success ε ← ν ε and β ← s·step_increase, after a failed line search ε ← τ ε (as the reference's MAID.py
  optimizer and the paper's Algorithm 2; the reference 1D script also multiplies ε by τ after every step).
  The error bound uses ε directly (strong-convexity constant 1, as the reference) and L_U = ||A||².
  The hypergradient is written into ``.grad`` and SGD's learning rate is set to the accepted step.
  ||B − A||_{H¹} has a kink at B = A (the start), where the hypergradient takes its subgradient 0: if β is at
  least the dual H¹ norm of the data term's hypergradient there, B = A is stationary, every step raises U to
  first order, and MAID only shrinks ε (experiments/adp/salehi_deblurring_2d.py computes that threshold).

The reconstruction after each step is the lower-level iterate x, which is also the next step's
warm start (``z``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from untrained.errors import UserError, check_at_least, check_choice, check_in_range, check_integer, check_positive
from untrained.methods.base import Method, StepOutput
from untrained.networks.unrolled_pg import UnrolledProximalGradient
from untrained.operators.base import conjugate_gradient, operator_norm
from untrained.problem import InverseProblem

SOLVERS = ("unrolled", "ift", "maid")
INITS = ("zeros", "noise", "measurement")
MAX_ITERATIONS = 1_000_000  # per lower-level or CG solve, and so per step


def upper_objective(
    network: UnrolledProximalGradient, problem: InverseProblem, x: torch.Tensor, sobolev_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, data term) with U = ½||A x − y||² + β||B − A||_{H¹}; x in the operator's domain."""
    data = 0.5 * (problem.operator(x) - problem.y).pow(2).sum()
    if sobolev_weight == 0:
        return data, data
    return data + sobolev_weight * network.operator.sobolev(), data


def hypergradient(
    network: UnrolledProximalGradient,
    problem: InverseProblem,
    x: torch.Tensor,
    sobolev_weight: float,
    cg_tol: float,
    cg_max_iter: int,
) -> tuple[list[torch.Tensor], torch.Tensor, dict]:
    """∇_B U at the lower-level point x by the implicit function theorem; returns (grads, U, info)."""
    params = [p for p in network.parameters() if p.requires_grad]
    with torch.enable_grad():
        x = x.detach().requires_grad_()
        upper, _ = upper_objective(network, problem, x, sobolev_weight)
        grad_x, *direct = torch.autograd.grad(upper, [x, *params], allow_unused=True)
        gradient_j = torch.autograd.grad(network.curvature_objective(x), x, create_graph=True)[0]
        mask = network.support(x.detach())
        restrict = (lambda v: v) if mask is None else (lambda v: v * mask)

        def hessian(v: torch.Tensor) -> torch.Tensor:
            product = torch.autograd.grad(gradient_j, x, restrict(v), retain_graph=True)[0]
            return product if mask is None else restrict(product) + (1 - mask) * v

        q, cg_iterations = conjugate_gradient(hessian, restrict(grad_x), cg_max_iter, tol=cg_tol)
        mixed = torch.autograd.grad(gradient_j, params, restrict(q), allow_unused=True)
    grads = [(d if d is not None else 0) - (m if m is not None else 0) for d, m in zip(direct, mixed)]
    grads = [g if isinstance(g, torch.Tensor) else torch.zeros_like(p) for g, p in zip(grads, params)]
    return grads, upper.detach(), {"cg_iterations": cg_iterations, "upper_gradient_norm": grad_x.norm().detach()}


class AnalyticDeepPrior(Method):
    """ADP / ADP-H¹ with an unrolled, IFT or MAID solver (see the module docstring).

    Args:
        solver: 'unrolled', 'ift' or 'maid'.
        lr: the upper-level step size (SGD on B); MAID's initial step.
        sobolev_weight: β of the H¹ penalty on B − A (0 = Dittmer et al.'s ADP).
        init: the first lower-level iterate: 'zeros' (Arndt; Salehi et al.), 'noise' (method.input, small
            random, Dittmer et al.) or 'measurement' (the task's Aᵀy).
        lower_solver: 'pg' (proximal gradient, the 1D references) or 'fista' (the 2D reference).
        lower_tol, lower_max_iter: IFT's high-accuracy lower-level solve (gradient-mapping norm).
        cg_tol, cg_max_iter: IFT's CG solve; MAID uses cg_tol = ε.
        maid_eps: MAID's initial lower-level accuracy ε₀; maid_max_iter its lower-level iteration cap.
        maid_rho, maid_tau, maid_nu, maid_step_increase, maid_decrease, maid_line_search: step
            backtracking factor ρ, accuracy decrease τ / increase ν, step increase, the constant c of the
            sufficient-decrease test and the number of backtracking trials.
        maid_min_eps: MAID stops updating once ε falls below it (the reference's stopping rule).
    """

    name = "adp"
    capturable_step = False  # lower-level solves of data-dependent length and host-side line searches

    def __init__(
        self,
        solver: str = "unrolled",
        lr: float = 1e-3,
        sobolev_weight: float = 0.0,
        init: str = "zeros",
        lower_solver: str = "pg",
        lower_tol: float = 1e-6,
        lower_max_iter: int = 500,
        cg_tol: float = 1e-8,
        cg_max_iter: int = 500,
        maid_eps: float = 1e-3,
        maid_max_iter: int = 500,
        maid_rho: float = 0.5,
        maid_tau: float = 0.5,
        maid_nu: float = 1.05,
        maid_step_increase: float = 10 / 9,
        maid_decrease: float = 1e-8,
        maid_line_search: int = 5,
        maid_min_eps: float = 0.0,
        **kwargs,
    ):
        kwargs.setdefault("optimizer", "sgd")
        super().__init__(lr=lr, **kwargs)
        check_choice("method.solver", solver, SOLVERS)
        check_choice("method.init", init, INITS)
        if lower_solver not in ("pg", "fista"):
            raise UserError(f"method.lower_solver must be 'pg' or 'fista', got '{lower_solver}'.")
        check_at_least("method.sobolev_weight", sobolev_weight, 0)
        check_at_least("method.lower_tol", lower_tol, 0)  # 0: always lower_max_iter iterations
        check_at_least("method.cg_tol", cg_tol, 0)
        for option, iterations in (
            ("lower_max_iter", lower_max_iter),
            ("cg_max_iter", cg_max_iter),
            ("maid_max_iter", maid_max_iter),
        ):
            check_integer(f"method.{option}", iterations, 1, MAX_ITERATIONS)
        check_positive("method.maid_eps", maid_eps)
        check_in_range("method.maid_rho", maid_rho, 0, 1, low_open=True, high_open=True)
        check_in_range("method.maid_tau", maid_tau, 0, 1, low_open=True, high_open=True)
        check_at_least("method.maid_nu", maid_nu, 1)
        check_at_least("method.maid_step_increase", maid_step_increase, 1)
        check_at_least("method.maid_decrease", maid_decrease, 0)
        check_integer("method.maid_line_search", maid_line_search, 1, 1000)
        check_at_least("method.maid_min_eps", maid_min_eps, 0)
        if self.optimizer_name != "sgd" and solver == "maid":
            raise UserError("method.solver=maid takes plain gradient steps of its own size: set method.optimizer=sgd.")
        self.solver, self.sobolev_weight, self.init = solver, sobolev_weight, init
        self.accelerate = lower_solver == "fista"
        self.lower_tol, self.lower_max_iter = lower_tol, lower_max_iter
        self.cg_tol, self.cg_max_iter = cg_tol, cg_max_iter
        self.maid = dict(
            max_iter=maid_max_iter,
            rho=maid_rho,
            tau=maid_tau,
            nu=maid_nu,
            step_increase=maid_step_increase,
            decrease=maid_decrease,
            line_search=maid_line_search,
            min_eps=maid_min_eps,
        )
        self.maid_eps0 = maid_eps

    # Setup ----------------------------------------------------------------------------------------
    def input_channels(self, problem: InverseProblem) -> int:
        return problem.image_shape[0]

    def setup(self, problem: InverseProblem, network: nn.Module) -> None:
        if not isinstance(network, UnrolledProximalGradient):
            raise UserError(
                "method=adp learns the operator of an unrolled proximal gradient network: use network=unrolled_pg."
            )
        network.bind(problem)
        if self.init == "measurement":
            self.input_spec.kind = "measurement"
        super().setup(problem, network)
        dtype = problem.y.dtype
        self.z = self.z.to(dtype)
        if self.init == "zeros":
            self.z.zero_()
        self.register_buffer("eps", torch.tensor(self.maid_eps0, dtype=dtype))
        self.register_buffer("step_size", torch.tensor(self.lr, dtype=dtype))
        self.upper_lipschitz = operator_norm(problem.operator, iterations=100) ** 2

    # Steps ----------------------------------------------------------------------------------------
    def optimization_step(
        self, network: UnrolledProximalGradient, problem: InverseProblem, step: int, optimizer, backward: Callable
    ) -> StepOutput:
        before = [p.detach().clone() for p in network.parameters()]
        x, loss, logs = {"unrolled": self.unrolled_step, "ift": self.ift_step, "maid": self.maid_step}[self.solver](
            network, problem, optimizer, backward
        )
        change = sum((p.detach() - b).pow(2).sum() for p, b in zip(network.parameters(), before)).sqrt()
        output = network.from_domain(x.detach())
        logs.update(operator_change=change, upper_loss=loss.detach(), data_loss=problem.data_loss(output).detach())
        if network.operator is not None and self.sobolev_weight:
            logs["sobolev"] = network.operator.sobolev().detach()
        if problem.has_ground_truth:
            logs.update({k: v.detach() for k, v in problem.extra_metrics(output).items()})
        return StepOutput(loss.detach(), output, logs)

    def unrolled_step(self, network, problem, optimizer, backward):
        optimizer.zero_grad(set_to_none=True)
        x = network.to_domain(network(self.z))
        loss, _ = upper_objective(network, problem, x, self.sobolev_weight)
        backward(loss)
        optimizer.step()
        return x, loss, {"lower_iterations": torch.tensor(network.layers)}

    def ift_step(self, network, problem, optimizer, backward):
        x, iterations = network.solve(network.to_domain(self.z), self.lower_tol, self.lower_max_iter, self.accelerate)
        grads, loss, info = hypergradient(network, problem, x, self.sobolev_weight, self.cg_tol, self.cg_max_iter)
        self.apply_gradient(network, optimizer, grads, self.lr)
        return (
            x,
            loss,
            {"lower_iterations": torch.tensor(iterations), "cg_iterations": torch.tensor(info["cg_iterations"])},
        )

    def maid_step(self, network, problem, optimizer, backward):
        settings, eps = self.maid, float(self.eps)
        if eps < settings["min_eps"]:  # converged to the requested accuracy: keep B, report the last x
            x = network.to_domain(self.z)
            self.apply_gradient(network, optimizer, None, 0.0)
            return (
                x,
                upper_objective(network, problem, x, self.sobolev_weight)[0].detach(),
                {"eps": self.eps.clone(), "step_size": torch.tensor(0.0), "line_search_trials": torch.tensor(0)},
            )
        x, iterations = network.solve(network.to_domain(self.z), eps, settings["max_iter"], self.accelerate)
        grads, loss, info = hypergradient(network, problem, x, self.sobolev_weight, eps, self.cg_max_iter)
        old_bound = loss + info["upper_gradient_norm"] * eps
        squared_norm = sum(g.pow(2).sum() for g in grads)
        if not torch.isfinite(squared_norm):  # every trial would fail and ε would shrink for nothing
            raise FloatingPointError(f"MAID: the hypergradient is not finite (upper loss {float(loss):.4g}).")
        params = [p for p in network.parameters() if p.requires_grad]
        saved = [p.detach().clone() for p in params]
        accepted, step_size, trials = None, float(self.step_size), 0
        for trial in range(settings["line_search"]):
            trials = trial + 1
            candidate = step_size * settings["rho"] ** trial
            with torch.no_grad():
                for p, s, g in zip(params, saved, grads):
                    p.copy_(s - candidate * g)
            x_new, used = network.solve(x, eps, settings["max_iter"], self.accelerate)
            iterations += used
            new_loss, gradient_norm = self.upper_value_and_gradient_norm(network, problem, x_new)
            new_bound = new_loss + gradient_norm * eps + self.upper_lipschitz * eps**2 / 2
            if new_bound - old_bound <= -settings["decrease"] * candidate * squared_norm:
                accepted = (candidate, x_new, new_loss)
                break
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
        if accepted is None:
            self.apply_gradient(network, optimizer, None, 0.0)
            self.eps.mul_(settings["tau"])
            result, result_loss, taken = x, loss, 0.0
        else:
            taken, result, result_loss = accepted
            self.apply_gradient(network, optimizer, grads, taken)
            self.eps.mul_(settings["nu"])
            self.step_size.fill_(taken * settings["step_increase"])
        logs = {
            "lower_iterations": torch.tensor(iterations),
            "cg_iterations": torch.tensor(info["cg_iterations"]),
            "eps": torch.tensor(eps),
            "step_size": torch.tensor(taken),
            "line_search_trials": torch.tensor(trials),
            "hypergradient_norm": squared_norm.sqrt().detach(),
        }
        return result, result_loss, logs

    def upper_value_and_gradient_norm(self, network, problem, x) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            point = x.detach().requires_grad_()
            value, _ = upper_objective(network, problem, point, self.sobolev_weight)
            gradient = torch.autograd.grad(value, point)[0]
        return value.detach(), gradient.norm()

    @staticmethod
    def apply_gradient(network, optimizer, grads: list[torch.Tensor] | None, step_size: float) -> None:
        """The module's one optimizer step along ``grads`` (None: no move), with learning rate ``step_size``
        (SGD, the default; Rprop reads it only as its initial step)."""
        params = [p for p in network.parameters() if p.requires_grad]
        for p, g in zip(params, grads if grads is not None else [torch.zeros_like(p) for p in params]):
            p.grad = g.detach().clone()
        for group in optimizer.param_groups:
            group["lr"] = step_size
        optimizer.step()

    @torch.no_grad()
    def after_step(self, network, problem, step, out) -> torch.Tensor:
        """The lower-level iterate is both the estimate and the next warm start."""
        self.z.copy_(out.output)
        return out.output
