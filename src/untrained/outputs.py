"""Files every run leaves in its output directory: images, arrays, metrics.json and the PSNR curve."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) → (H, W) or (H, W, 3); (1, C, n) signals → (C, n)."""
    array = image.detach().float().cpu().numpy()[0]
    if array.ndim == 3:
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array[:3], 0, -1)
    return array


def save_png(image: torch.Tensor, path: Path, data_range: float = 1.0) -> None:
    array = to_numpy_image(image)
    if array.ndim == 2 and image.ndim == 3:  # a 1D signal: plot it
        fig, ax = plt.subplots(figsize=(6, 3))
        for channel in array:
            ax.plot(channel)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return
    from PIL import Image

    scaled = np.clip(array / data_range, 0, 1) * 255
    Image.fromarray(np.round(scaled).astype(np.uint8)).save(path)


def write_json_atomic(data: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=float))
    os.replace(tmp, path)


def plot_curves(history: dict, path: Path, markers: dict[str, int] | None = None) -> None:
    steps = np.asarray(history["step"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].semilogy(steps, history["loss"])
    axes[0].set(xlabel="step", ylabel="data loss", title="loss")
    if "psnr" in history:
        psnr = np.array([np.nan if v is None else v for v in history["psnr"]], dtype=float)
        keep = ~np.isnan(psnr)
        axes[1].plot(steps[keep], psnr[keep])
        for label, step in (markers or {}).items():
            axes[1].axvline(step, ls="--", lw=0.8, color="k" if label == "best" else "r", label=f"{label} ({step})")
        if markers:
            axes[1].legend()
    axes[1].set(xlabel="step", ylabel="PSNR [dB]", title="PSNR vs step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_run_outputs(
    output_dir: Path, module, metrics: dict, extra_images: dict[str, torch.Tensor] | None = None
) -> None:
    """Write reconstructions (.npy and .png), measurement, ground truth, curve and metrics.json."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    problem = module.problem
    images = {"final": module.estimate}
    if int(module.best_step) >= 0:
        images["best"] = module.best_image
    images.update(extra_images or {})
    for name, image in images.items():
        np.save(output_dir / f"{name}.npy", image.detach().cpu().numpy()[0])
        save_png(problem.display(image), output_dir / f"{name}.png", problem.data_range)
    if problem.has_ground_truth:
        save_png(problem.display(problem.x_true), output_dir / "ground_truth.png", problem.data_range)
    for name, image in problem.baselines().items():
        save_png(problem.display(image), output_dir / f"baseline_{name}.png", problem.data_range)
    if tuple(problem.y.shape[1:]) == tuple(problem.image_shape):
        save_png(problem.display(problem.y), output_dir / "measurement.png", problem.data_range)
    np.save(output_dir / "measurement.npy", problem.y.detach().cpu().numpy()[0])
    if module.history["step"]:
        markers = {"best": metrics["best_step"]} if "best_step" in metrics else {}
        if "es_step" in metrics:
            markers["stopping rule"] = metrics["es_step"]
        plot_curves(module.history, output_dir / "psnr_curve.png", markers)
        write_json_atomic(module.history, output_dir / "history.json")
    write_json_atomic(
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()},
        output_dir / "metrics.json",
    )
    method = getattr(module, "method", None)
    if hasattr(method, "write_outputs"):  # method-specific files: OES's mask, DOP's recovered corruption
        method.write_outputs(output_dir, problem)
