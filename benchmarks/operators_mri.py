"""Forward + adjoint time of the multi-coil MRI (SENSE) operator at the task's default size.

    python -m benchmarks.operators_mri                     # 320×320, 15 coils (conf/task/mri.yaml), CPU
    python -m benchmarks.operators_mri --size 640 368 --coils 15 --device cuda

Prints one line per setting: milliseconds per forward, per adjoint and per forward+adjoint (median of
``--repeats`` timed calls after warm-up), and the dot-product test error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from untrained.operators.base import adjointness_error
from untrained.operators.mri import MultiCoilMRI


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


@torch.no_grad()
def benchmark(height: int = 320, width: int = 320, coils: int = 15, device: str = "cpu", repeats: int = 20) -> dict:
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(coils, height, width, dtype=torch.complex64, generator=generator)
    mask = (torch.rand(width, generator=generator) < 0.25).float().expand(height, width).clone()
    operator = MultiCoilMRI(maps, mask).to(device)
    x = torch.randn(1, height, width, dtype=torch.complex64, generator=generator).to(device)
    y = operator(x)
    forward = time_call(lambda: operator(x), device, repeats)
    adjoint = time_call(lambda: operator.adjoint(y), device, repeats)
    both = time_call(lambda: operator.adjoint(operator(x)), device, repeats)
    return {
        "operator": "mri",
        "shape": [height, width],
        "coils": coils,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "forward_ms": forward,
        "adjoint_ms": adjoint,
        "forward_adjoint_ms": both,
        "adjoint_error": adjointness_error(operator),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[320, 320], metavar=("H", "W"))
    parser.add_argument("--coils", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if args.device == "cuda" else [])
    for device in devices:
        print(json.dumps(benchmark(*args.size, args.coils, device, args.repeats)))


if __name__ == "__main__":
    main()
