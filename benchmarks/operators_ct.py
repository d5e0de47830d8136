"""Forward + adjoint time of the sparse-view CT ray transform, per implementation (``task.impl``).

    python -m benchmarks.operators_ct                                   # 256², 18 views; astra_cpu and torch
    python -m benchmarks.operators_ct --sizes 128,256 --threads 1 --name cpu-ct-operator-torch
    python -m benchmarks.operators_ct --device cuda --impls astra_cuda,torch --name gpu-ct-operator

Prints one JSON line per (size, implementation): milliseconds per forward, per adjoint and per forward+adjoint
(median of ``--repeats`` timed calls after warm-up; ``torch`` on CUDA also inside one recorded CUDA graph),
the dot-product test error and the relative difference of the projection of an ellipse phantom from
astra_cpu's (‖A x − A_astra_cpu x‖ / ‖A_astra_cpu x‖). With ``--name`` also writes
benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from benchmarks.operators_mri import time_call
from untrained.operators.base import adjointness_error
from untrained.operators.ct import RayTransform, ray_transform
from untrained.operators.generators.phantoms import random_ellipses


def graphed(fn, example: torch.Tensor):
    """``fn`` recorded in a CUDA graph (static input ``example``), as the fast path records the step."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(example)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(example)
    return graph.replay


@torch.no_grad()
def benchmark(
    size: int = 256, views: int = 18, impl: str = "astra_cpu", device: str = "cpu", repeats: int = 20
) -> dict:
    device = torch.device(device)
    operator = ray_transform(size, views, impl=impl).to(device)
    x = torch.from_numpy(random_ellipses(size, 1))[None, None].to(device)
    y = operator(x)
    reference = RayTransform(size, views, impl="astra_cpu")(x.cpu())
    both = time_call(lambda: operator.adjoint(operator(x)), device, repeats)
    row = {
        "operator": "ct",
        "size": size,
        "views": views,
        "detectors": operator.detectors,
        "impl": operator.impl,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "forward_ms": time_call(lambda: operator(x), device, repeats),
        "adjoint_ms": time_call(lambda: operator.adjoint(y), device, repeats),
        "forward_adjoint_ms": both,
        "operator_norm": operator.norm,
        "adjoint_error": adjointness_error(operator),
        "relative_difference_from_astra_cpu": float((y.cpu() - reference).norm() / reference.norm()),
    }
    if device.type == "cuda" and operator.capturable:
        replay = graphed(lambda t: operator.adjoint(operator(t)), x)
        row["forward_adjoint_graph_ms"] = time_call(replay, device, repeats)
    return row


def write(rows: list[dict], name: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
    if torch.cuda.is_available():
        machine += f", {torch.cuda.get_device_name(0)}"
    (out / f"{name}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    lines = [
        f"# CT ray transform: forward + adjoint per implementation ({name})",
        "",
        f"Machine: {machine}. Command: `python -m benchmarks.operators_ct` (see {name}.json for every field). "
        "Median of timed calls after warm-up; one image; `difference` is ‖A x − A_astra_cpu x‖ / ‖A_astra_cpu x‖ "
        "on an ellipse phantom (both normalised to ‖A‖ = 1); `adjoint` the dot-product test's relative error.",
        "",
        "| size | views | impl | device | threads | forward ms | adjoint ms | forward+adjoint ms | graph ms "
        "| difference | adjoint |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        graph = f"{r['forward_adjoint_graph_ms']:.3f}" if "forward_adjoint_graph_ms" in r else "–"
        lines.append(
            f"| {r['size']} | {r['views']} | {r['impl']} | {r['device']} | {r['threads']} | {r['forward_ms']:.3f} "
            f"| {r['adjoint_ms']:.3f} | {r['forward_adjoint_ms']:.3f} | {graph} "
            f"| {r['relative_difference_from_astra_cpu']:.1e} | {r['adjoint_error']:.1e} |"
        )
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256", help="comma-separated image sizes")
    parser.add_argument("--views", type=int, default=18)
    parser.add_argument("--impls", default=None, help="default: astra_cpu,torch (+ astra_cuda with --device cuda)")
    parser.add_argument("--device", default="cpu", help="where torch tensors live: cpu | cuda")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default=None, help="write benchmarks/results/<name>.{json,md}")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    impls = args.impls.split(",") if args.impls else ["astra_cpu", "torch"]
    if args.impls is None and args.device == "cuda":
        impls.append("astra_cuda")
    rows = []
    for size in map(int, args.sizes.split(",")):
        for impl in impls:
            device = "cpu" if impl == "astra_cpu" else args.device
            rows.append(benchmark(size, args.views, impl, device, args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    if args.name:
        write(rows, args.name, args.out)


if __name__ == "__main__":
    main()
