"""Files every run leaves in its output directory: images, arrays, metrics.json and the PSNR curve.

Every file is written to a temporary name and renamed over the old one, so that a run killed while writing (a
preempted job past SLURM's grace period) leaves the previous complete file, never a truncated one."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` once the write has succeeded."""
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # same suffix: writers choose formats by it
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def save_npy(path: Path, array) -> None:
    with replacing(path) as partial:
        np.save(partial, np.asarray(array))


def save_figure(fig, path: Path, **options) -> None:
    with replacing(path) as partial:
        fig.savefig(partial, **options)


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
        save_figure(fig, path, dpi=100)
        plt.close(fig)
        return
    from PIL import Image

    scaled = np.clip(array / data_range, 0, 1) * 255
    with replacing(path) as partial:
        Image.fromarray(np.round(scaled).astype(np.uint8)).save(partial)


def write_json_atomic(data: dict, path: Path) -> None:
    with replacing(path) as partial:
        partial.write_text(json.dumps(data, indent=2, sort_keys=True, default=float))


def write_metrics(metrics: dict, output_dir: Path) -> None:
    """The one writer of ``metrics.json`` (atomically; a non-finite number becomes null)."""
    write_json_atomic(
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()},
        Path(output_dir) / "metrics.json",
    )


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
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def write_run_outputs(
    output_dir: Path, module, metrics: dict, extra_images: dict[str, torch.Tensor] | None = None
) -> None:
    """Write reconstructions (.npy and .png), measurement, ground truth, curve and metrics.json. The numbers and
    arrays come first, so that a failure drawing a figure never loses them."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    problem = module.problem
    write_metrics(metrics, output_dir)
    if module.history["step"]:
        write_json_atomic(module.history, output_dir / "history.json")
    images = {"final": module.estimate}
    if int(module.best_step) >= 0:
        images["best"] = module.best_image
    images.update(extra_images or {})
    for name, image in images.items():
        save_npy(output_dir / f"{name}.npy", image.detach().cpu().numpy()[0])
    save_npy(output_dir / "measurement.npy", problem.y.detach().cpu().numpy()[0])
    for name, image in images.items():
        save_png(problem.display(image), output_dir / f"{name}.png", problem.data_range)
    if problem.has_ground_truth:
        save_png(problem.display(problem.x_true), output_dir / "ground_truth.png", problem.data_range)
    for name, image in problem.baselines().items():
        save_png(problem.display(image), output_dir / f"baseline_{name}.png", problem.data_range)
    # An image-shaped real measurement is shown as an image (k-space of 2 coils has the shape, not the meaning).
    if not problem.y.is_complex() and tuple(problem.y.shape[1:]) == tuple(problem.image_shape):
        save_png(problem.display(problem.y), output_dir / "measurement.png", problem.data_range)
    if module.history["step"]:
        markers = {"best": metrics["best_step"]} if "best_step" in metrics else {}
        if "es_step" in metrics:
            markers["stopping rule"] = metrics["es_step"]
        plot_curves(module.history, output_dir / "psnr_curve.png", markers)
    method = getattr(module, "method", None)
    if hasattr(method, "write_outputs"):  # method-specific files: OES's mask, DOP's recovered corruption
        method.write_outputs(output_dir, problem)


# A run's metrics ---------------------------------------------------------------------------------
def device_name(trainer) -> str:
    """The device the fit ran on (Lightning moves the module back to the CPU when the fit ends)."""
    device = trainer.strategy.root_device
    return str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")


def fit_metrics(cfg, module, trainer, wall_time: float, reporting) -> tuple[dict, dict]:
    """One fit's metrics.json entries and extra images: its module's summary, the run's settings and what its
    reporting callbacks add."""
    steps = int(trainer.global_step)
    metrics = module.summary()
    metrics.update(
        steps=steps,
        task=cfg.task.get("name"),
        method=cfg.method.get("name"),
        seed=int(cfg.seed),
        wall_time_s=wall_time,
        seconds_per_step=wall_time / max(steps, 1),
        device=device_name(trainer),
        task_info=module.problem.info,  # what a re-analysis needs: noise level, mask, data scale, views...
        metric_conventions=module.problem.metric_conventions(),
    )
    images = {}
    for callback in reporting:
        metrics.update(callback.report(module))
        images.update(callback.images(module))
    # What the run hands over without a ground truth to pick by: the stopping rule's chosen iterate when it fired,
    # otherwise the final one (best.* needs the ground truth and stays an oracle).
    chosen = "es" if metrics.get("es_stopped") and "es" in images else "final"
    metrics["reconstruction"] = chosen
    images["reconstruction"] = images["es"] if chosen == "es" else module.estimate
    if module.problem.has_ground_truth:
        metrics["reconstruction_psnr"] = metrics["es_psnr"] if chosen == "es" else metrics.get("final_psnr")
    return metrics, images


def write_results(run, outcome) -> dict:
    """Every output of a fitted run (``run.Run``, ``run.Outcome``): a single fit's files in the output directory;
    for a batched fit each member's in ``member_<b>/`` and the batch summary in the output directory. Returns
    the metrics written to the output directory's metrics.json."""
    output_dir = Path(run.cfg.paths.output_dir)
    interrupted = {"interrupted_by": outcome.interrupted_by} if outcome.interrupted_by else {}
    if not run.batched:
        metrics, images = fit_metrics(run.cfg, run.module, run.trainer, outcome.wall_time_s, run.reporting[0])
        metrics.update(performance=run.module.performance_report(), **interrupted)
        write_run_outputs(output_dir, run.module, metrics, images)
        return metrics
    size, results = len(run.members), []
    for b, (member, member_cfg) in enumerate(zip(run.members, run.configs)):
        metrics, images = fit_metrics(member_cfg, member, run.trainer, outcome.wall_time_s, run.reporting[b])
        metrics.update(member=b, batch_size=size, task_index=member_cfg.task.get("index"), **interrupted)
        write_run_outputs(output_dir / f"member_{b}", member, metrics, images)
        results.append(metrics)
    finished = [m for m in results if m["status"] != "failed"]
    steps, wall_time = int(run.trainer.global_step), outcome.wall_time_s
    summary = {
        "status": ("interrupted" if outcome.interrupted_by else "completed") if finished else "failed",
        "batch_size": size,
        "steps": steps,
        "wall_time_s": wall_time,
        "seconds_per_step": wall_time / max(steps, 1),
        "reconstructions_per_hour": size * 3600 / wall_time if wall_time > 0 else None,
        "members": results,
        "device": device_name(run.trainer),
        "performance": run.module.performance_report(),
        **interrupted,
    }
    for key in ("best_psnr", "final_psnr"):
        values = [m[key] for m in finished if key in m]
        if values:
            summary[key] = sum(values) / len(values)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(summary, output_dir)
    return summary
