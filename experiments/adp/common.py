"""Shared helpers of the analytic-deep-prior reproductions: build a run from Hydra overrides and drive its step
runner (the method's own optimisation step, eager fp32) in a plain loop without Lightning, recording CPU time per
step as the papers' time axes do."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from untrained.run import build_module, compose
from untrained.speed.policy import Performance
from untrained.speed.runner import StepRunner

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "experiments" / "figures"
RESULTS = ROOT / "experiments" / "adp" / "results"
BASE = [
    "logger=none",
    "callbacks=none",
    "trainer.accelerator=cpu",
    "network=unrolled_pg",
    "method=adp",
    "paths.output_dir=/tmp/untrained-adp",
]


def build(overrides: list[str]):
    """The UntrainedModule that `python train.py <overrides>` would fit (problem, network, method)."""
    return build_module(compose(BASE + list(overrides)))


def fit(module, steps: int, stop=None) -> dict[str, list[float]]:
    """Run ``steps`` ADP steps; the history holds the step's logs and the cumulative process CPU time."""
    method, network, problem = module.method, module.network, module.problem
    runner = StepRunner.for_method(network, problem, method, torch.device("cpu"), Performance.eager())
    optimizer = method.configure_optimizer(network)
    history: dict[str, list[float]] = {"step": [], "cpu_time": []}
    cpu = 0.0
    for step in range(steps):
        start = time.process_time()
        out = runner.step(step, optimizer, lambda loss: loss.backward())
        method.after_step(network, problem, step, out)
        cpu += time.process_time() - start
        history["step"].append(step)
        history["cpu_time"].append(cpu)
        for key, value in out.logs.items():
            history.setdefault(key, []).append(float(value))
        if stop is not None and stop(history):
            break
    return history


def exact_lower_level(module, tol: float = 1e-10, max_iter: int = 200000) -> torch.Tensor:
    """x(B) for the current B, solved to high accuracy (FISTA from the last iterate), in network space."""
    network = module.network
    x, _ = network.solve(network.to_domain(module.method.z), tol, max_iter, accelerate=True)
    return network.from_domain(x)


def save_json(data, name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2, default=float))
    return path
