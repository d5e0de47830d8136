"""Forward + adjoint time of the sparse-view CT ray transform at the task's default size.

    python -m benchmarks.operators_ct                          # 256×256, 18 views (conf/task/ct.yaml), astra_cpu
    python -m benchmarks.operators_ct --size 512 --views 60

Prints one JSON line per backend (astra_cpu, and astra_cuda when a GPU is present): milliseconds per
forward, per adjoint and per forward+adjoint (median of ``--repeats`` timed calls after warm-up), and the
dot-product test error.
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.operators_mri import time_call
from untrained.operators.base import adjointness_error
from untrained.operators.ct import RayTransform


@torch.no_grad()
def benchmark(size: int = 256, views: int = 18, impl: str = "astra_cpu", repeats: int = 20) -> dict:
    device = torch.device("cuda" if impl == "astra_cuda" else "cpu")
    operator = RayTransform(size, views, impl=impl)
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    y = operator(x)
    forward = time_call(lambda: operator(x), device, repeats)
    adjoint = time_call(lambda: operator.adjoint(y), device, repeats)
    both = time_call(lambda: operator.adjoint(operator(x)), device, repeats)
    return {
        "operator": "ct",
        "size": size,
        "views": views,
        "detectors": operator.detectors,
        "impl": impl,
        "device": str(device),
        "forward_ms": forward,
        "adjoint_ms": adjoint,
        "forward_adjoint_ms": both,
        "operator_norm": operator.norm,
        "adjoint_error": adjointness_error(operator),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=18)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    for impl in ["astra_cpu"] + (["astra_cuda"] if torch.cuda.is_available() else []):
        print(json.dumps(benchmark(args.size, args.views, impl, args.repeats)))


if __name__ == "__main__":
    main()
